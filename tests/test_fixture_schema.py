"""The fixture schema is one table: the builder, the loader's expected shapes and the manifest
entries are all read from it, so they cannot drift apart."""

import pytest
from minifim.fixtures import make_fixture

from minifim.oracle.fixtures.schema import ARRAY_DOCS, array_schema, describe, expected_shapes

PRESETS = [
    "logistic-regression",
    "categorical-tanh",
    "bernoulli-sigmoid",
    "gaussian-softplus",
    "cnn-digits",
    "sequence-expand",
    "sequence-reduce",
]


@pytest.mark.parametrize("name", PRESETS)
def test_built_arrays_follow_the_schema_in_order(name):
    fx = make_fixture(name)
    schema = array_schema(fx.net)
    assert fx.keys() == list(schema)  # the file's key order is the table's
    shapes = expected_shapes(fx.net, fx.N)
    for key, row in schema.items():
        assert fx[key].shape == row.shape(fx.N) == shapes[key], key
        entry = fx.manifest["arrays"][key]
        assert {k: v for k, v in entry.items() if k != "shape"} == describe(key, fx.net), key
        assert entry["param_axes"] == list(row.param_axes)
        assert all(fx[key].shape[ax] == fx.P for ax in row.param_axes), key


def test_trajectory_arrays_are_described_by_the_trajectory_table():
    fx = make_fixture("logistic-regression", trajectory="adam:steps=2,lr=0.01")
    K1 = 3
    shapes = expected_shapes(fx.net, fx.N, {"steps": 2})
    for key in ("trajectory/theta", "trajectory/loss", "trajectory/gradient"):
        assert fx[key].shape == shapes[key] and fx[key].shape[0] == K1
    for key in fx.keys():
        if key.startswith("trajectory/state/"):
            want = describe(key, fx.net, fx[key].shape)
            assert want["param_axes"] == ([1] if fx[key].shape[1:] == (fx.P,) else [])
            assert fx.manifest["arrays"][key]["param_axes"] == want["param_axes"]


def test_array_docs_is_read_from_the_table():
    rows = array_schema(make_fixture("categorical-tanh").net)
    for key, (desc, axes, power) in ARRAY_DOCS.items():
        assert (desc, axes, power) == (
            rows[key].description,
            list(rows[key].param_axes),
            rows[key].reduction_power,
        )
    assert "true_fisher" in ARRAY_DOCS and "ngd_step" in ARRAY_DOCS


def test_short_name_submodules_are_the_same_modules():
    import minifim.fixtures.container as short

    import minifim
    import minifim.oracle.fixtures.container as long

    assert short is long and short.Fixture is minifim.Fixture
