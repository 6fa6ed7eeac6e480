"""The ``minifim`` command line: make fixtures, inspect them, check other libraries against them.

::

    minifim fixture list                                   # the built-in presets
    minifim fixture make categorical-tanh -o F.npz         # one preset (or several, or --all)
    minifim fixture make --spec my_spec.json -o F.npz      # a JSON spec (see make_fixture)
    minifim fixture make linear-regression --trajectory sgd:steps=5,lr=0.1
    minifim fixture show F.npz                             # manifest and arrays
    minifim check F.npz candidate.npz                      # compare key by key
    minifim check F.npz candidate.npz --layout jax --reduction sum --rtol 1e-6 --json
    minifim check F.npz candidate.npz --diagnose my_fisher --mc-samples 10
    minifim check F.npz candidate.npz --loss mse-mean      # a torch MSELoss(mean) library

Exit status (``python -m minifim`` is the same program)::

    0    every comparison and diagnosis passes (``check``), or the command succeeded
    1    ``check`` ran and something fails: a mismatch, a candidate key that matches nothing,
         a NaN/Inf candidate entry, a diagnosis that is not the true Fisher
    2    usage or input error, nothing judged: a bad option, a missing or unreadable file, an
         invalid, damaged or oversized fixture or candidate (zip bomb, lying .npy header), a
         complex candidate, an output that cannot be written (read-only folder, full disk),
         a request over the memory budget
    130  interrupted (Ctrl-C); an interrupted write leaves no temporary file

Every failure prints one line ``minifim: error: ...`` on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from .._version import __version__
from .comparison import DEFAULT_RTOL
from .keys import LOSSES
from .layouts import LAYOUTS, REDUCTIONS

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILED", "EXIT_ERROR", "EXIT_INTERRUPTED"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


#: Bytes any candidate array may hold whatever the fixture (its own extra keys, a manifest).
CANDIDATE_FLOOR = 16 * 2**20


class CommandError(Exception):
    """An error whose message is complete as it stands (printed as one line, exit 2)."""


EPILOG_CHECK = """\
Keys of the candidate are matched to the fixture's arrays by --map, then by exact name, then
as a state-dict key ("0.weight"), then through common aliases (F, EF, H, grad, S, J, eigvals,
...). A candidate key that matches nothing is a failure (use --map or --keys).

layouts: pytorch  W0, b0, W1, b1, ... with W (out, in) row-major (minifim's own order)
         in-out   W stored as (in, out) (x @ W code), then b, per layer
         jax      jax.flatten_util.ravel_pytree of flax params: layers sorted by name,
                  bias before kernel (in, out)

loss conventions (--loss; per-sample loss factor s, and the reduction it fixes):
         nll       minifim's negative log-likelihood, s = 1 (reduction from --reduction)
         mse-mean  torch MSELoss(reduction="mean"): s = 2 sigma^2 / C, mean over N C
         mse-sum   MSELoss(reduction="sum"): s = 2 sigma^2, sum
         ce-mean   CrossEntropyLoss(reduction="mean"): s = 1, mean
         ce-sum    CrossEntropyLoss(reduction="sum"): s = 1, sum
         bce-mean  BCEWithLogitsLoss(reduction="mean"): s = 1 / C, mean over N C
         bce-sum   BCEWithLogitsLoss(reduction="sum"): s = 1, sum
Curvatures of the loss (Hessian, GGN, true and MC Fisher), the gradient and the scores scale
with s (the scores become per-sample loss gradients -s * score), the empirical Fisher with
s^2. A failure that a convention explains prints the flag that makes it pass
("would pass with: --loss mse-mean"). --diagnose explains a curvature, a diagonal or the
scores as variant x factors x layout (see --json for the structured explanation).
"""


def _add_common_tolerance(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rtol",
        type=float,
        default=DEFAULT_RTOL,
        help=f"relative tolerance (default {DEFAULT_RTOL:g}); pass: |c - r| <= atol + rtol |r|",
    )
    p.add_argument(
        "--atol",
        type=float,
        default=None,
        help="absolute tolerance (default: rtol * max|r| of each array)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``minifim`` program (every sub-command has ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="minifim",
        description="minifim: exact Fisher-information reference for small MLPs. Make "
        "versioned fixtures and check another library's arrays against them.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"minifim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    fx = sub.add_parser(
        "fixture",
        help="make, list and inspect fixtures",
        description="Make, list and inspect reference fixtures.",
    )
    fsub = fx.add_subparsers(dest="fixture_command", metavar="ACTION")
    fsub.required = True

    fsub.add_parser(
        "list",
        help="list the built-in presets",
        description="List the built-in presets with their models.",
    )

    make = fsub.add_parser(
        "make",
        help="make fixtures from presets or a JSON spec",
        description="Make fixtures (.npz with an embedded JSON manifest) from built-in "
        "presets or a JSON spec. The same command gives a byte-identical file.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent("""\
            JSON spec keys: sizes (an MLP) or layers (minifim.layers config dicts such as
            {"type": "Conv2d", "in_channels": 1, ...}) with input_shape, activation (MLP),
            likelihood, sigma, link (poisson: log|softplus), parameterization
            (heteroscedastic: logvar|natural), num_samples, seed, init (pytorch|normal),
            input_scale, labels (model|uniform), logit_scale, damping, description, name,
            preset (a base preset to override), and optional explicit theta, X, y (lists).
            Trajectory: OPTIMISER:steps=K[,key=value...] with OPTIMISER a constructor of
            minifim.optim, e.g. sgd:steps=5,lr=0.1 or adam:steps=10,lr=0.01."""),
    )
    make.add_argument(
        "presets", nargs="*", metavar="PRESET", help="preset name(s); see `minifim fixture list`"
    )
    make.add_argument("--all", action="store_true", help="make every preset")
    make.add_argument("--spec", metavar="FILE", help="a JSON spec file instead of a preset")
    make.add_argument(
        "-o",
        "--output",
        metavar="FILE.npz",
        help="output file (one fixture only; default NAME.npz in --out-dir)",
    )
    make.add_argument(
        "--out-dir",
        metavar="DIR",
        default=".",
        help="folder for NAME.npz outputs (default: the current folder)",
    )
    make.add_argument(
        "--trajectory",
        metavar="OPT:steps=K",
        help="also record K full-batch optimiser steps (per-step arrays)",
    )

    show = fsub.add_parser(
        "show",
        help="print a fixture's manifest and arrays",
        description="Print a fixture's manifest and its arrays.",
    )
    show.add_argument("fixture", metavar="FIXTURE.npz")
    show.add_argument("--json", action="store_true", help="print the manifest as JSON")

    chk = sub.add_parser(
        "check",
        help="compare a candidate .npz with a fixture",
        description="Compare the arrays of CANDIDATE.npz with the fixture's, key by key: "
        "max abs error, max relative error, worst entry, pass/fail at the stated "
        "tolerance. Exits 1 if anything fails.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_CHECK,
    )
    chk.add_argument("fixture", metavar="FIXTURE.npz")
    chk.add_argument("candidate", metavar="CANDIDATE.npz")
    chk.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="CAND=FIXTURE",
        help="map a candidate key to a fixture array (repeatable)",
    )
    chk.add_argument("--keys", nargs="+", metavar="KEY", help="compare only these candidate keys")
    chk.add_argument(
        "--layout",
        choices=LAYOUTS,
        default=LAYOUTS[0],
        help=f"parameter order of the candidate (default {LAYOUTS[0]})",
    )
    chk.add_argument(
        "--reduction",
        choices=REDUCTIONS,
        default=None,
        help="the candidate's reduction over samples (default: the one --loss fixes, "
        f"{REDUCTIONS[0]} for nll)",
    )
    chk.add_argument(
        "--loss",
        choices=LOSSES,
        default=LOSSES[0],
        help="the candidate library's loss convention: " + ", ".join(LOSSES) + f" (default "
        f"{LOSSES[0]}; see below)",
    )
    _add_common_tolerance(chk)
    chk.add_argument(
        "--diagnose",
        nargs="*",
        metavar="KEY",
        default=None,
        help="explain the given candidate keys (a curvature, a diagonal or the scores) as "
        "variant x factors x layout; without KEY: every key that names a curvature, a "
        "Fisher diagonal or the scores",
    )
    chk.add_argument(
        "--mc-samples",
        type=int,
        metavar="K",
        default=None,
        help="the candidate is a Monte-Carlo Fisher with K labels per input: "
        "test its error against the exact sampling band",
    )
    chk.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _parse_map(items: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        cand, eq, ref = item.partition("=")
        if not eq or not cand or not ref:
            raise ValueError(f"--map: expected CANDIDATE_KEY=FIXTURE_KEY, received {item!r}")
        out[cand] = ref
    return out


def _cmd_list(args: argparse.Namespace, out: IO[str]) -> int:
    from .fixtures import PRESETS, resolve_spec
    from .fixtures.spec import net_from_spec

    rows = []
    for name in PRESETS:
        _, spec = resolve_spec(name)
        net = net_from_spec(spec)
        if spec["sizes"] is not None:
            act, sizes = spec["activation"], "x".join(map(str, spec["sizes"]))
        else:  # a Sequential: its layer types, input -> output shape
            act = "layers"
            sizes = (
                "x".join(map(str, net.input_shape)) + "->" + "x".join(map(str, net.output_shape))
            )
        rows.append(
            (
                name,
                f"{net.likelihood.name}/{act}",
                sizes,
                str(net.num_params),
                str(spec["num_samples"]),
                spec["description"],
            )
        )
    headers = ("preset", "likelihood/act", "sizes", "P", "N", "description")
    widths = [max(len(r[i]) for r in rows + [headers]) for i in range(5)]
    for r in [headers] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5], file=out)
    return 0


def _cmd_make(args: argparse.Namespace, out: IO[str]) -> int:
    from .fixtures import PRESETS, make_fixture, save_fixture

    if args.spec and (args.presets or args.all):
        raise ValueError("give either PRESET names / --all or --spec, not both")
    if args.spec:
        path = Path(args.spec)
        try:
            spec = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"--spec: no such file {args.spec!r}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"--spec {args.spec!r}: not valid JSON ({err})") from None
        if not isinstance(spec, dict):
            raise ValueError(f"--spec {args.spec!r}: expected a JSON object")
        spec.setdefault("name", path.stem)
        command = f"minifim fixture make --spec {path.name}"
        jobs: list[tuple[dict[str, Any] | str, str]] = [(spec, command)]
    else:
        names = list(PRESETS) if args.all else args.presets
        if not names:
            raise ValueError(
                "fixture make: give PRESET name(s), --all or --spec FILE (see "
                "`minifim fixture list`)"
            )
        jobs = [(n, f"minifim fixture make {n}") for n in names]
    if args.output and len(jobs) > 1:
        raise ValueError("-o/--output names one file; with several presets use --out-dir")
    if args.trajectory:
        jobs = [(s, c + f" --trajectory {args.trajectory}") for s, c in jobs]
    for spec, command in jobs:
        fx = make_fixture(spec, trajectory=args.trajectory, command=command)
        target = Path(args.output) if args.output else Path(args.out_dir) / f"{fx.name}.npz"
        try:
            save_fixture(fx, target)
        except OSError as err:  # read-only folder, full disk, a folder in the way, ...
            raise CommandError(f"cannot write {str(target)!r}: {_os_reason(err)}") from None
        print(
            f"wrote {target}  ({fx.name}: {fx.net!r}, N={fx.N}, P={fx.P}, {len(fx.arrays)} arrays)",
            file=out,
        )
    return 0


def _cmd_show(args: argparse.Namespace, out: IO[str]) -> int:
    from .fixtures import load_fixture

    fx = load_fixture(args.fixture)
    if args.json:
        print(json.dumps(fx.manifest, indent=1), file=out)
        return 0
    m = fx.manifest
    print(f"fixture   {args.fixture}", file=out)
    print(f"name      {m['name']}: {m.get('description', '')}", file=out)
    print(f"model     {fx.net!r}", file=out)
    print(
        f"sizes     N = {fx.N}, P = {fx.P}; reduction {m['reduction']}; NGD damping "
        f"{m['damping']:g}",
        file=out,
    )
    print(
        f"order     {', '.join(m['parameter_order'])}; W in PyTorch layout ((out, in), conv "
        "(out, in, kh, kw)) row-major",
        file=out,
    )
    print(
        f"made by   {m.get('command')} (minifim {m['minifim_version']}, schema "
        f"{m['schema_version']})",
        file=out,
    )
    if m.get("trajectory"):
        t = m["trajectory"]
        print(f"trajectory {t['optimiser']} {t['options']} for {t['steps']} steps", file=out)
    width = max(len(k) for k in fx.keys())
    for key in fx.keys():
        info = m["arrays"][key]
        shape = "x".join(map(str, info["shape"])) or "()"
        desc = info["description"]
        print(f"  {key:<{width}}  {shape:<10} {desc[:90]}", file=out)
    return 0


def _load_candidate(path: Path, fixture: Any) -> dict[str, Any]:
    """The named arrays of a candidate ``.npz`` (no pickle), read with bounds: an array may
    hold at most :data:`CANDIDATE_FLOOR` bytes or twice the fixture's largest array (a
    complex copy of it is then refused by the oracle with a clear message); a zip bomb or a
    lying ``.npy`` header is refused before anything is allocated."""
    from .fixtures import read_npz

    largest = max(arr.nbytes for arr in fixture.arrays.values())
    return read_npz(path, max(2 * largest, CANDIDATE_FLOOR), "candidate")


def _cmd_check(args: argparse.Namespace, out: IO[str]) -> int:
    from .checking import check
    from .diagnosis import DIAGNOSED_KEYS
    from .fixtures import load_fixture
    from .keys import resolve_key

    fx = load_fixture(args.fixture)
    candidate = _load_candidate(Path(args.candidate), fx)
    mapping = _parse_map(args.map)
    diag_keys = []
    if args.diagnose is not None:
        diag_keys = list(args.diagnose)
        if not diag_keys:
            for k in candidate:
                if resolve_key(fx, k, mapping) in DIAGNOSED_KEYS:
                    diag_keys.append(k)
            if not diag_keys:
                raise ValueError(
                    "--diagnose: no candidate key maps to one of "
                    f"{', '.join(DIAGNOSED_KEYS)}; name the key(s) to diagnose"
                )
    if args.mc_samples is not None and args.diagnose is None:
        raise ValueError("--mc-samples is used by --diagnose; add --diagnose [KEY]")
    result = check(
        fx,
        candidate,
        mapping=mapping,
        layout=args.layout,
        reduction=args.reduction,
        rtol=args.rtol,
        atol=args.atol,
        keys=args.keys,
        diagnose_keys=diag_keys,
        mc_samples=args.mc_samples,
        candidate_label=str(args.candidate),
        loss=args.loss,
    )
    print(result.to_json() if args.json else result.table(), file=out)
    return EXIT_OK if result.passed else EXIT_FAILED


def _os_reason(err: OSError) -> str:
    """``"No space left on device"`` rather than ``"[Errno 28] ...: 'path'"``."""
    return err.strerror or str(err) or type(err).__name__


def _error_line(err: BaseException) -> str:
    """One line naming the problem (the exception's own message, whitespace collapsed)."""
    if isinstance(err, KeyError) and err.args:
        message = str(err.args[0])
    elif isinstance(err, OSError) and err.strerror:
        where = f" {str(err.filename)!r}" if err.filename else ""
        message = f"cannot access{where}: {err.strerror}"
    elif isinstance(err, MemoryError) and not str(err):
        message = "out of memory"
    else:
        message = str(err) or type(err).__name__
    return "minifim: error: " + " ".join(message.split())


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> int:
    """Run the ``minifim`` program; returns the exit status (see the module docstring)."""
    out = sys.stdout if out is None else out
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors: argparse exits with status 2
    handlers = {"list": _cmd_list, "make": _cmd_make, "show": _cmd_show}
    try:
        if args.command == "fixture":
            return handlers[args.fixture_command](args, out)
        return _cmd_check(args, out)
    except KeyboardInterrupt:
        print("minifim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (
        CommandError,
        ValueError,
        TypeError,
        KeyError,
        OSError,
        FloatingPointError,
        MemoryError,
    ) as err:  # MemoryError: minifim.MemoryBudgetError and numpy's own
        print(_error_line(err), file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
