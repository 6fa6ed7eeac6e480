"""The option vocabularies (minifim.options): string enums, as_option, the deprecation helper."""

import inspect
import json
import warnings

import pytest

import minifim
from minifim import options
from minifim.options import (
    Curvature,
    FisherKind,
    Layout,
    Option,
    Structure,
    as_option,
    deprecated_keywords,
    renamed_keyword,
)

VOCABULARIES = [
    getattr(options, n)
    for n in options.__all__
    if isinstance(getattr(options, n), type)
    and issubclass(getattr(options, n), Option)
    and getattr(options, n) is not Option
]


def test_every_vocabulary_is_exported_and_nonempty():
    assert len(VOCABULARIES) >= 18
    for cls in VOCABULARIES:
        assert len(cls) >= 2, cls


@pytest.mark.parametrize("cls", VOCABULARIES, ids=lambda c: c.__name__)
def test_members_round_trip_their_strings(cls):
    for member in cls:
        s = member.value
        assert isinstance(member, str)
        assert member == s and s == member
        assert hash(member) == hash(s)
        assert {s: 1}[member] == 1 and {member: 1}[s] == 1
        assert str(member) == s and f"{member}" == s and f"{member:>12}" == f"{s:>12}"
        assert json.dumps(member) == json.dumps(s)
        assert cls(s) is member
        assert as_option(s, cls, "arg") is member
        assert as_option(member, cls, "arg") is member
    assert cls.values() == tuple(m.value for m in cls)
    assert len(set(cls.values())) == len(cls)


@pytest.mark.parametrize("cls", VOCABULARIES, ids=lambda c: c.__name__)
def test_bad_values_name_the_argument(cls):
    with pytest.raises(ValueError, match=r"^myarg: expected one of \[.*\], received 'nope'$"):
        as_option("nope", cls, "myarg")
    with pytest.raises(TypeError, match=r"^myarg: expected one of .*received int 3$"):
        as_option(3, cls, "myarg")
    with pytest.raises(TypeError, match="myarg"):
        as_option(None, cls, "myarg")


def test_aliases_from_the_ecosystem():
    assert as_option("kron", Structure, "structure") is Structure.KFAC  # laplace-torch
    assert as_option("type-2", FisherKind, "fisher") is FisherKind.TRUE  # curvlinops
    assert as_option("type-2", Curvature, "curvature") is Curvature.TRUE
    assert Structure.aliases() == {"kron": Structure.KFAC}
    assert "kron" not in Structure.values()  # aliases are accepted, never listed as values
    with pytest.raises(ValueError, match=r"\['block', 'diag', 'full', 'kfac'\]"):
        as_option("dense", Structure, "structure")  # "dense" is a solver route, not a structure


def test_curvature_is_the_fisher_kinds_plus_hessian():
    assert Curvature.values() == FisherKind.values() + ("hessian",)
    for kind in FisherKind:
        assert Curvature(kind.value) == kind  # equal as strings across vocabularies


def test_allowed_subset():
    sub = (FisherKind.TRUE, FisherKind.EMPIRICAL)
    assert as_option("empirical", FisherKind, "fisher", allowed=sub) is FisherKind.EMPIRICAL
    with pytest.raises(
        ValueError,
        match=r"^fisher: expected one of \['empirical', 'true'\], "
        r"received 'mc'$",
    ):
        as_option("mc", FisherKind, "fisher", allowed=sub)
    assert as_option("type-2", FisherKind, "fisher", allowed=("true",)) is FisherKind.TRUE


def test_values_match_the_plain_string_vocabularies():
    assert Layout.values() == ("pytorch", "in-out", "jax")
    assert options.Reduction.values() == ("mean", "sum")
    assert options.Bias.values() == ("folded", "separate")
    assert options.PredType.values() == ("glm", "nn")
    assert options.KFACDamping.values() == ("eigen", "factored")
    assert options.ScoreBackend.values() == ("backprop", "autograd")


def test_public_constants_are_the_enums():
    assert minifim.FISHER_KINDS == ("true", "empirical", "mc", "argmax", "ggn")
    assert all(isinstance(k, FisherKind) for k in minifim.FISHER_KINDS)


# --- the deprecation helper -------------------------------------------------------------------


@deprecated_keywords(seed_or_rng="rng", meth="method")
def _f(x, rng=0, method="a"):
    return (x, rng, method)


def test_deprecated_keyword_warns_and_maps():
    with pytest.warns(
        DeprecationWarning,
        match=r"_f: keyword 'seed_or_rng' is deprecated "
        r"since minifim .* use 'rng'",
    ) as rec:
        assert _f(1, seed_or_rng=5) == (1, 5, "a")
    assert rec[0].filename == __file__  # points at the caller
    with pytest.warns(DeprecationWarning, match="'meth'.*'method'"):
        assert _f(1, meth="b") == _f(1, method="b")


def test_new_keyword_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _f(1, rng=2, method="c") == (1, 2, "c")
        assert _f(1, 2, "c") == (1, 2, "c")


def test_both_keywords_raise():
    with pytest.raises(TypeError, match=r"received both 'seed_or_rng' \(deprecated\) and 'rng'"):
        _f(1, seed_or_rng=1, rng=2)


def test_decorated_signature_is_the_new_one():
    assert list(inspect.signature(_f).parameters) == ["x", "rng", "method"]


def test_decorator_refuses_a_wrong_mapping():
    with pytest.raises(TypeError, match="no parameter 'nothere'"):
        deprecated_keywords(old="nothere")(lambda x: x)
    with pytest.raises(TypeError, match="still has the old parameter 'old'"):
        deprecated_keywords(old="x")(lambda x, old=1: x)


def test_renamed_keyword_in_place():
    kwargs = {"n": 3}
    with pytest.warns(DeprecationWarning, match=r"g: keyword 'n' is deprecated .* 'n_draws'"):
        renamed_keyword("n", "n_draws", kwargs, where="g")
    assert kwargs == {"n_draws": 3}
    kwargs = {"n_draws": 3}
    renamed_keyword("n", "n_draws", kwargs)  # absent: nothing, no warning
    assert kwargs == {"n_draws": 3}
    with pytest.raises(TypeError, match="both 'n'"):
        renamed_keyword("n", "n_draws", {"n": 1, "n_draws": 2})
