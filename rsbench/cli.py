"""The ``rsbench`` command line (typer + rich). Every error is one line on stderr and exit code 2;
set ``RSBENCH_DEBUG=1`` to see the traceback."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, cast

import typer
import typer.core
from rich.markup import escape

from rsbench.atomic import atomic_write_text, check_output_path, json_text
from rsbench.errors import RsbenchError, check_sigma
from rsbench.progress import console
from rsbench.store.redaction import redact

if TYPE_CHECKING:
    from rsbench.config import CertifyConfig
    from rsbench.protocol import Split
    from rsbench.store import Store


class OneLineErrors(typer.core.TyperGroup):
    """Usage errors (unknown option, missing argument, bad value) as one stderr line with exit code 2,
    like every other error; typer would print a panel."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as error:  # typer's usage errors (its own vendored click's)
            context = getattr(error, "ctx", None)
            command = context.command_path if context else "rsbench"
            message = error.format_message() if hasattr(error, "format_message") else str(error)
            print(redact(f"rsbench: error: {message} (hint: see `{command} --help`)"), file=sys.stderr)
            sys.exit(2)
        except typer.Abort:
            print("rsbench: interrupted", file=sys.stderr)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


class ParamsCommand(typer.core.TyperCommand):
    """A command whose plugin's hyperparameters are flags of their own: ``rsbench train --method NAME
    --help`` (or ``--preset NAME``) lists the method's, ``rsbench certify --certifier NAME --help`` the
    certifier's."""

    selectors: tuple[str, ...] = ()

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        for flag in self.selectors:
            for index, token in enumerate(args):
                if token == flag and index + 1 < len(args):
                    ctx.meta[flag] = args[index + 1]
                elif token.startswith(flag + "="):
                    ctx.meta[flag] = token.split("=", 1)[1]
        return super().parse_args(ctx, args)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        super().format_help(ctx, formatter)
        from rsbench.params import describe_params

        try:
            things = self.described(ctx)
        except RsbenchError as error:
            console.print(f"[red]{escape(error.message)}[/]", highlight=False)
            return
        for flag, thing in things:
            console.print(f"\n{flag} {thing.name}: {thing.description}", markup=False, highlight=False)
            for param in describe_params(thing.Params):
                constraint = f" [{param['constraint']}]" if param["constraint"] else ""
                option = "--" + param["name"].replace("_", "-")
                console.print(
                    f"  {option} {param['type']} = {param['default']}{constraint}: {param['help']}",
                    markup=False,
                    highlight=False,
                )

    def described(self, ctx: Any) -> list[tuple[str, Any]]:
        raise NotImplementedError


class TrainCommand(ParamsCommand):
    selectors = ("--method", "--preset")

    def described(self, ctx: Any) -> list[tuple[str, Any]]:
        from rsbench.config import find_preset
        from rsbench.plugins import get_manager, get_method

        name = ctx.meta.get("--method")
        if name is None and "--preset" in ctx.meta:
            name = find_preset(ctx.meta["--preset"])[0]
        methods = [get_method(name)] if name else [m for _, m in get_manager().methods.items()]
        return [("--method", method) for method in methods]


class CertifyCommand(ParamsCommand):
    selectors = ("--certifier",)

    def described(self, ctx: Any) -> list[tuple[str, Any]]:
        from rsbench.plugins import get_certifier

        return [("--certifier", get_certifier(ctx.meta.get("--certifier", "cohen")))]


app = typer.Typer(
    cls=OneLineErrors,
    name="rsbench",
    help="Train, certify and rank randomized-smoothing classifiers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)
out = typer.echo  # results go to stdout; progress and messages to stderr


def _print_version(value: bool) -> None:
    if value:
        from rsbench import __version__

        out(f"rsbench {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Train, certify and rank randomized-smoothing classifiers."""


def fail(message: str, hint: str | None = None) -> NoReturn:
    raise RsbenchError(message, hint)


def in_launched_rank() -> bool:
    """Whether this process is a rank that ``rsbench launch`` started (it reports its failures to it)."""
    return "TORCHELASTIC_RUN_ID" in os.environ and bool(os.environ.get("RSBENCH_LAUNCH_DIR"))


def report(line: str, kind: str = "error") -> None:
    """``line`` (passwords redacted) on stderr; in a rank of ``rsbench launch``, handed to the launcher
    instead, which shows its ranks' failures as one line."""
    line = redact(line)
    if in_launched_rank():
        from rsbench.distributed import report_to_launcher

        if report_to_launcher(kind, line):
            return
    print(line, file=sys.stderr)


def handle_errors(command):
    """Turn :class:`RsbenchError` (and interruptions, and a rank's lost contact with its peers) into one
    stderr line and exit code 2 (130 when interrupted)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        rank = f" (rank {os.environ.get('RANK')})" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        try:
            return command(*args, **kwargs)
        except RsbenchError as error:
            if os.environ.get("RSBENCH_DEBUG"):
                raise
            hint = f" (hint: {error.hint})" if error.hint else ""
            report(f"rsbench: error{rank}: {error.message}{hint}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            report("rsbench: interrupted; completed work is saved, rerun the command to resume", "interrupted")
            raise typer.Exit(130) from None
        except RuntimeError as error:
            if os.environ.get("RSBENCH_DEBUG") or "rsbench.distributed" not in sys.modules:
                raise
            from rsbench.distributed import is_lost_peer

            if not is_lost_peer(error):
                raise
            report(
                f"rsbench: error{rank}: lost contact with another rank ({str(error).splitlines()[0][-120:]}) "
                "(hint: another rank stopped, see its error, or the network between the machines failed)",
                "lost",
            )
            raise typer.Exit(2) from None

    return wrapper


class DeferredStore:
    """The store of ``--db``, opened when first used (or by :meth:`open`): a command that refuses its input
    creates no ``./rsbench.db``. Commands open it once everything else is validated, before long work."""

    def __init__(self, db: str | None):
        self.db = db
        self.store: Store | None = None

    def open(self) -> Store:
        if self.store is None:
            from rsbench.store import open_store

            self.store = open_store(self.db)
        return self.store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.open(), name)


def deferred_store(db: str | None) -> Store:
    """A :class:`DeferredStore` where a :class:`~rsbench.store.Store` is expected."""
    return cast("Store", DeferredStore(db))


def parse_key_values(items: list[str] | None, flag: str = "--param") -> dict[str, str]:
    result = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{flag} expects key=value, not {item!r}", f"e.g. {flag} lam=10")
        result[key.strip()] = value.strip()
    return result


def parse_extra_flags(args: list[str]) -> dict[str, str]:
    """Method hyperparameters given as their own flags: ``--lam 10``, ``--loss=mse``, ``--deferred``."""
    params: dict[str, str] = {}
    index = 0
    while index < len(args):
        token = args[index]
        if not token.startswith("--") or len(token) < 3:
            fail(f"unexpected argument {token!r}", "hyperparameters are given as --name value")
        name, sep, value = token[2:].partition("=")
        if not sep:
            following = args[index + 1] if index + 1 < len(args) else None
            if following is None or following.startswith("--"):
                value = "true"
            else:
                value = following
                index += 1
        params[name.replace("-", "_")] = value
        index += 1
    return params


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """Comma-separated finite numbers, at least one."""
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        fail(f"{what} must be comma-separated numbers, not {text!r}")
    return values


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """Comma-separated integers, at least one (``--indices 1.7`` or ``--indices ,`` is an error)."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values:
        fail(f"{what} must be comma-separated integers, not {text!r}", f"e.g. {what} 0,7,42")
    return values


DbOption = Annotated[str | None, typer.Option(help="Results store URL or path (default $RSBENCH_DB or ./rsbench.db).")]
DataDirOption = Annotated[Path | None, typer.Option(help="Data root (default $RSBENCH_DATA or ./data).")]
DeviceOption = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: CUDA when present).")]
ProgressOption = Annotated[bool, typer.Option(help="Show progress bars.")]
CheckpointArgument = Annotated[Path, typer.Argument(help="A checkpoint of rsbench, Cohen, Salman or Jeong & Shin.")]
SigmaOption = Annotated[float | None, typer.Option(help="σ of the smoothing noise (default: the checkpoint's).")]
BatchOption = Annotated[int, typer.Option(help="Noisy copies per forward pass.")]
SplitOption = Annotated[str, typer.Option(help="train or test.")]
SkipOption = Annotated[int, typer.Option(help="Every SKIP-th index of the split.")]
LimitOption = Annotated[int | None, typer.Option(help="At most LIMIT examples (a count).")]
IndicesOption = Annotated[str | None, typer.Option(help="Explicit indices '0,7,42' (overrides skip/limit).")]
NoiseSeedOption = Annotated[int, typer.Option("--seed", help="Seed of the noise (per example: seed, index).")]
DatasetOption = Annotated[str | None, typer.Option(help="Dataset, for official checkpoints.")]
NormalizationOption = Annotated[str | None, typer.Option(help="mean_std, mean or none, for official checkpoints.")]
CertifierOption = Annotated[str, typer.Option(help="Certifier plugin (see `rsbench plugins`).")]
CertifierParamOption = Annotated[list[str] | None, typer.Option(help="Certifier hyperparameter key=value.")]


# --------------------------------------------------------------------------------------------- train

TRAIN_HELP = """Train a base classifier for randomized smoothing and record the run.

Method hyperparameters are flags of their own (`--lam 10`, `--m 2`, `--eta 0.5`, `--eps 1.0` ...): every
hyperparameter the chosen method declares is accepted, as is `--param key=value`; `rsbench plugins`
lists them. Schedules default to the dataset's paper schedule.

Examples:

    rsbench train --dataset mnist --method gaussian --sigma 0.5 --epochs 1

    rsbench train --dataset mnist --arch lenet --method consistency --sigma 0.5 --lam 5 --m 2

    rsbench train --preset mnist-consistency-0.50 --train-limit 2000 --epochs 1

    rsbench train --preset mnist-consistency-0.50 --config-example > run.toml   # every setting, commented

    rsbench train --config run.toml --seed 3
"""


@app.command(
    cls=TrainCommand, help=TRAIN_HELP, context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
@handle_errors
def train(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Option(help="Dataset plugin, e.g. mnist, cifar10, imagenet.")] = None,
    arch: Annotated[str | None, typer.Option(help="Architecture (default: the dataset's).")] = None,
    method: Annotated[str | None, typer.Option(help="Training method plugin (default: gaussian).")] = None,
    sigma: Annotated[float | None, typer.Option(help="Noise level σ in [0,1] pixel units.")] = None,
    preset: Annotated[str | None, typer.Option(help="A named configuration, e.g. a paper row.")] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="YAML or TOML file of settings; flags override.")
    ] = None,
    config_example: Annotated[
        bool,
        typer.Option(
            "--config-example", help="Print the run's settings as a commented --config file (TOML), then stop."
        ),
    ] = False,
    param: Annotated[list[str] | None, typer.Option(help="Method hyperparameter key=value.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: paper schedule).")] = None,
    batch: Annotated[int | None, typer.Option(help="Loader batch size (default 256).")] = None,
    lr: Annotated[float | None, typer.Option(help="Initial learning rate.")] = None,
    milestones: Annotated[
        str | None, typer.Option(help="0-based epochs from which lr is multiplied by 0.1, '31,61' (official MNIST).")
    ] = None,
    nesterov: Annotated[
        bool | None,
        typer.Option(
            "--nesterov/--no-nesterov",
            help="Nesterov momentum (the paper's text; default: plain, as the official code).",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run folder (default runs/NAME).")] = None,
    train_limit: Annotated[int | None, typer.Option(help="Train on the first N examples (smoke runs).")] = None,
    test_limit: Annotated[int | None, typer.Option(help="Evaluate on the first N test examples.")] = None,
    data_dir: DataDirOption = None,
    device: DeviceOption = None,
    workers: Annotated[int, typer.Option(help="Data-loader workers for file-based datasets.")] = 2,
    resume: Annotated[bool, typer.Option(help="Continue the interrupted run in --out.")] = False,
    checkpoint_every: Annotated[
        float | None, typer.Option(help="Seconds between checkpoints within an epoch (default 600).")
    ] = None,
    db: DbOption = None,
    progress: ProgressOption = True,
):
    from rsbench.config import train_config
    from rsbench.distributed import current_world
    from rsbench.training import train as run_training

    flags = {
        "dataset": dataset,
        "arch": arch,
        "method": method,
        "sigma": sigma,
        "epochs": epochs,
        "batch_size": batch,
        "lr": lr,
        "nesterov": nesterov,
        "seed": seed,
        "train_limit": train_limit,
        "test_limit": test_limit,
        "data_dir": str(data_dir) if data_dir else None,
        "device": device,
        "workers": workers,
        "out": str(out_dir) if out_dir else None,
        "checkpoint_every": checkpoint_every,
        "milestones": parse_ints(milestones, "--milestones") if milestones is not None else None,
        "params": {**parse_key_values(param), **parse_extra_flags(ctx.args)},
    }
    if config_example:  # with no dataset or σ given, an MNIST run at σ = 0.5
        from rsbench.config import config_example as example

        out(example(train_config(preset, config_file, flags, base={"dataset": "mnist", "sigma": 0.5})).rstrip("\n"))
        return
    config = train_config(preset, config_file, flags)
    main_rank = current_world(config.device).main  # under torchrun, rank 0 alone records and reports
    store = DeferredStore(db) if main_rank else None  # opened once the run is validated, before training
    result = run_training(config, resume=resume, show_progress=progress, ready=store.open if store else None)
    if store is None:
        return
    store.record_training(config, result)
    speed = f", {result.images_per_second:,.0f} images/s" if result.images_per_second else ""
    console.print(
        f"trained {config.method} on {config.dataset}: noisy test accuracy {result.test_accuracy:.4f}{speed}",
        markup=False,
    )
    out(str(result.checkpoint))


# ------------------------------------------------------------------------------- certify / predict


def _run_certification(config: CertifyConfig, db: str | None, show_progress: bool) -> None:
    from rsbench.certification import certify as run_certify
    from rsbench.distributed import current_world

    store = deferred_store(db)  # opened once the checkpoint, data and settings are validated
    run_id = run_certify(config, store, show_progress=show_progress)
    if not current_world().main:
        return  # under torchrun, rank 0 alone reports
    rows = store.results([run_id])
    summary = (
        f"run {run_id}: {len(rows)} examples, accuracy {rows.correct.mean():.4f}, "
        f"abstained {(rows.predict == -1).mean():.4f}"
    )
    if config.kind == "certify":
        summary += f", ACR {(rows.correct * rows.radius).mean():.4f}, draws/image {rows.draws.mean():,.0f}"
        if (rows.radius_kind == "grid").any():
            summary += " (grid radii: the ACR is a lower bound)"
    console.print(summary)
    out(str(run_id))


CERTIFY_HELP = """Certify the smoothed classifier of a checkpoint (Cohen's CERTIFY, or another certifier); rows
go to the store as they are done, and rerunning an interrupted command resumes it. Prints the run id.

Certifier hyperparameters are flags of their own (`--certifier adaptive --stages 8`), as is
`--param key=value`; `rsbench certify --certifier NAME --help` lists them.

Examples:

    rsbench certify runs/mnist/gaussian-sigma0.5-seed0/checkpoint.pth.tar --skip 100 --n 10000

    rsbench certify CHECKPOINT --certifier adaptive --radii 0:2.5:0.25 --futility 0.01

    rsbench certify cohen_models/cifar10/resnet110/noise_0.50/checkpoint.pth.tar --dataset cifar10
"""
PREDICT_HELP = """Predict with the smoothed classifier (Cohen's PREDICT, abstaining when the top two classes cannot
be told apart at level α). Prints the run id.

Example:

    rsbench predict runs/mnist/gaussian-sigma0.5-seed0/checkpoint.pth.tar --n 1000 --limit 100
"""


def _certification_command(kind: str):
    """``rsbench certify`` or ``rsbench predict``: one option set and one config builder for both."""
    certifying = kind == "certify"

    def command(
        ctx: typer.Context,
        checkpoint: CheckpointArgument,
        sigma: SigmaOption = None,
        n0: Annotated[int, typer.Option(help="Selection draws.", hidden=not certifying)] = 100,
        n: Annotated[int, typer.Option(help="Estimation draws." if certifying else "Noise draws.")] = (
            100_000 if certifying else 1000
        ),
        alpha: Annotated[
            float, typer.Option(help="Failure probability of the certificate." if certifying else "Level of the test.")
        ] = 0.001,
        batch: BatchOption = 1000,
        split: SplitOption = "test",
        skip: SkipOption = 1,
        limit: LimitOption = None,
        indices: IndicesOption = None,
        noise_seed: NoiseSeedOption = 0,
        dataset: DatasetOption = None,
        normalization: NormalizationOption = None,
        certifier: CertifierOption = "cohen",
        param: CertifierParamOption = None,
        radii: Annotated[
            str | None,
            typer.Option(
                help="Radii a grid certifier decides, start:stop:step or a list (ℓ2, [0,1] pixels).",
                hidden=not certifying,
            ),
        ] = None,
        data_dir: DataDirOption = None,
        device: DeviceOption = None,
        images_per_batch: Annotated[int, typer.Option(help="Inputs sharing one forward pass (faster on GPUs).")] = 1,
        budget: Annotated[
            str | None,
            typer.Option(
                help="Budget label: a named budget (full, paper-subset, quick, smoke; checked: the run must keep "
                "its training and certification protocol) or a free label. Left out: the named budget the run "
                "keeps, else custom."
            ),
        ] = None,
        db: DbOption = None,
        progress: ProgressOption = True,
    ):
        from rsbench.config import CertifyConfig, parse_radii

        config = CertifyConfig(
            checkpoint=str(checkpoint),
            kind="certify" if certifying else "predict",
            sigma=sigma,
            n0=n0,
            n=n,
            alpha=alpha,
            batch=batch,
            split=cast("Split", split),  # checked against the vocabulary before anything runs
            skip=skip,
            limit=limit,
            indices=list(parse_ints(indices, "--indices")) if indices is not None else None,
            noise_seed=noise_seed,
            dataset=dataset,
            normalization=normalization,
            certifier=certifier,
            certifier_params={**parse_key_values(param), **parse_extra_flags(ctx.args)},
            radii=parse_radii(radii) if certifying else (),
            data_dir=str(data_dir) if data_dir else None,
            device=device,
            budget=budget,
            images_per_batch=images_per_batch,
        )
        _run_certification(config, db, progress)

    # the annotations name ``certifying``, which typer's evaluation (module globals only) would not see
    command.__annotations__ = typing.get_type_hints(
        command, {**globals(), "certifying": certifying}, include_extras=True
    )
    return command


for _kind, _help in (("certify", CERTIFY_HELP), ("predict", PREDICT_HELP)):
    app.command(
        _kind,
        cls=CertifyCommand,
        help=_help,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(handle_errors(_certification_command(_kind)))


# ------------------------------------------------------------------------------ import / export / runs


@app.command("import")
@handle_errors
def import_(
    files: Annotated[list[Path], typer.Argument(help="Run records (.json, .json.gz) or Cohen-format TSV logs.")],
    dataset: Annotated[str | None, typer.Option(help="Dataset a TSV log certifies.")] = None,
    method: Annotated[str | None, typer.Option(help="Training method of a TSV log's model.")] = None,
    sigma: Annotated[float | None, typer.Option(help="σ of a TSV log's certification (and training).")] = None,
    param: Annotated[list[str] | None, typer.Option(help="Method hyperparameter key=value.")] = None,
    seed: Annotated[int | None, typer.Option(help="Training seed (several files, none given: 0, 1, ...).")] = None,
    n0: Annotated[int, typer.Option(help="N0 of the log's protocol.")] = 100,
    n: Annotated[int, typer.Option(help="N of the log's protocol.")] = 100_000,
    alpha: Annotated[float, typer.Option(help="α of the log's protocol.")] = 0.001,
    arch: Annotated[str | None, typer.Option(help="Architecture of the certified model.")] = None,
    new_method: Annotated[
        bool, typer.Option(help="Admit a method name no installed plugin registers (else: a likely typo).")
    ] = False,
    db: DbOption = None,
):
    """Import run records (`rsbench export RUN --format json`) or certification logs (`idx label predict
    radius correct time`, one run per file, with --dataset, --method and --sigma), so published results sit in
    the same leaderboard as new runs. A record of a protocol the store holds merges into that run. Prints
    the run ids.

    Examples:

        rsbench import leaderboards/records/mnist/*.json.gz

        rsbench import noise_0.50.tsv --dataset mnist --method gaussian --sigma 0.5
    """
    from rsbench.results.records import import_record, is_record_path

    records = [is_record_path(path) for path in files]
    if any(records) and not all(records):
        fail("give either run records (.json, .json.gz) or TSV logs, not both")
    store = deferred_store(db)  # opened once the first file is read and checked
    if all(records):
        for path in files:
            run_id, added, skipped = import_record(store, path)
            skipped_text = f", {skipped} identical rows skipped" if skipped else ""
            console.print(f"{path}: run {run_id}, {added} rows added{skipped_text}", markup=False)
            out(str(run_id))
        return
    if dataset is None or method is None or sigma is None:
        fail("a TSV log needs --dataset, --method and --sigma", "e.g. --dataset mnist --method gaussian --sigma 0.5")
    from rsbench.results.cohen_tsv import import_tsv

    params = parse_key_values(param)
    for index, path in enumerate(files):
        run_seed = seed if seed is not None or len(files) == 1 else index
        run_id = import_tsv(
            store,
            path,
            dataset=dataset,
            method=method,
            sigma=sigma,
            params=params,
            seed=run_seed,
            n0=n0,
            n=n,
            alpha=alpha,
            arch=arch,
            new_method=new_method,
        )
        out(str(run_id))


@app.command()
@handle_errors
def validate(files: Annotated[list[Path], typer.Argument(help="Run records (.json, .json.gz) to check.")]):
    """Check run records as untrusted input, without a store: the checks `rsbench import` makes (types and
    ranges of every field, registered datasets and certifiers, safe names, each row against the protocol,
    the protocol key against the protocol's fields), streaming rows in bounded memory. One line per file;
    exit code 2 if any is refused.

    Example: `rsbench validate leaderboards/records/mnist/*.json.gz`
    """
    from rsbench.results.escape import printable
    from rsbench.results.records import validate_record

    refused = 0
    for path in files:
        try:
            reader, rows = validate_record(path)
        except RsbenchError as error:
            refused += 1
            hint = f" (hint: {error.hint})" if error.hint else ""
            print(printable(f"rsbench: refused: {error.message}{hint}"), file=sys.stderr)
            continue
        protocol, run = reader.protocol, reader.header.run
        out(printable(f"{path}: valid, {rows:,} rows: {protocol.dataset} {run.method} σ={protocol.sigma:g} "
                      f"{protocol.certifier} N={protocol.n:,} ({run.status})"))  # fmt: skip
    if refused:
        raise typer.Exit(2)


@app.command()
@handle_errors
def export(
    run: Annotated[int, typer.Argument(help="Run id (see `rsbench runs`).")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File to write (JSON: stdout when absent).")
    ] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="tsv or json (default: from the file name).")] = None,
    paper: Annotated[str | None, typer.Option(help="JSON record: the paper of the model (title or citation).")] = None,
    paper_url: Annotated[str | None, typer.Option(help="JSON record: a link to the paper.")] = None,
    extra_data: Annotated[
        bool | None, typer.Option("--extra-data/--no-extra-data", help="JSON record: trained with extra data?")
    ] = None,
    db: DbOption = None,
):
    """Export a run as a JSON run record (rows, protocol, provenance, training configuration and model info,
    gzip-compressed for a .gz name) or as Cohen's TSV.

    Examples:

        rsbench export 3 --format json -o run3.json

        rsbench export 3 -o noise_0.50.tsv
    """
    from rsbench.results.cohen_tsv import export_tsv
    from rsbench.results.record_schema import check_header
    from rsbench.results.records import is_record_path, record_of, write_record
    from rsbench.store import open_store

    fmt = fmt or ("json" if output is None or is_record_path(output) else "tsv")
    if fmt not in ("tsv", "json"):
        fail(f"unknown format {fmt!r}", "choose tsv or json")
    if fmt == "tsv" and output is None:
        fail("a TSV export needs -o FILE")
    if output is not None:
        check_output_path(output)
    store = open_store(db)
    if fmt == "tsv" and output is not None:
        count = export_tsv(store, run, output)
        console.print(f"wrote {count} rows to {output}", markup=False)
        return
    document = record_of(store, run, {"paper": paper, "paper_url": paper_url, "extra_data": extra_data})
    try:  # what import and validate would refuse (a --paper-url that is no http(s) link) is never written
        check_header(output or Path("<stdout>"), {k: v for k, v in document.items() if k != "rows"})
    except RsbenchError as error:
        fail(f"the record would not validate: {error.message}", "check --paper, --paper-url and the run")
    if output is None:
        out(json.dumps(document, allow_nan=False))
        return
    write_record(document, output)
    console.print(f"wrote run {run} ({len(document['rows'])} rows) to {output}", markup=False)


@app.command()
@handle_errors
def runs(
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the LIMIT most recent runs.")] = None,
    db: DbOption = None,
):
    """List certification runs in the store. The origin column says `predict` for predictions and, for an
    unfinished run, `running` (a process on this machine certifies it), `incomplete` (interrupted: rerun its
    command to resume it) or `running on HOST?` (started on another machine, which cannot be checked here).
    Numbers are never cut: on a narrow terminal the method and origin columns fold.

    Examples: `rsbench runs --dataset mnist`, `rsbench runs --limit 10`
    """
    from rsbench.results.tables import print_whole, runs_table
    from rsbench.store import open_store

    if limit is not None and limit < 1:
        fail(f"--limit must be at least 1, not {limit}")
    store = open_store(db)
    frame = store.runs(dataset, kind=None)
    if limit is not None:
        frame = frame.tail(limit)
    print_whole(console, runs_table(frame, store.result_counts(frame["id"].tolist()), store.url))


# --------------------------------------------------------------------------------------- leaderboard


@app.command()
@handle_errors
def leaderboard(
    dataset: Annotated[str, typer.Option(help="Dataset to rank.")],
    fmt: Annotated[str, typer.Option("--format", help="rich, markdown, latex, csv or json.")] = "rich",
    radii: Annotated[str | None, typer.Option(help="Radius grid start:stop:step or a list.")] = None,
    sort_by: Annotated[str, typer.Option(help="Rank by acr, or by certified accuracy at a radius (0.50).")] = "acr",
    reported: Annotated[bool, typer.Option("--reported", help="Add the paper's reported rows.")] = False,
    columns: Annotated[
        str | None, typer.Option(help="Columns of rich/markdown/latex tables, e.g. 'method,acr,0.50,1.00'.")
    ] = None,
    wide: Annotated[
        bool, typer.Option("--wide", help="Terminal table: every column, with ± std and 95% intervals.")
    ] = False,
    intervals: Annotated[
        bool, typer.Option("--intervals", help="Markdown/LaTeX: each cell with its 95% interval over examples.")
    ] = False,
    sigma: Annotated[float | None, typer.Option(help="Only rows certified at this σ.")] = None,
    common_examples: Annotated[
        bool,
        typer.Option("--common-examples", help="Recompute every row on the test examples all shown rows evaluated."),
    ] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to a file instead of stdout.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Also plot certified accuracy vs radius (PNG + PDF).")] = None,
    db: DbOption = None,
):
    """Rank methods within each σ and protocol by ACR (or certified accuracy at a radius): mean ± std over
    distinct training seeds, 95% intervals over test examples, and a best marked (bold) only where a paired
    test on the examples it and the runner-up both evaluated tells them apart (else both show ≈).

    Columns (`--columns`): sigma, method, params, arch, origin, paper, seeds, acr, each radius (`0.50`),
    clean, abstain, certifier, radii, draws, n, n0, alpha, examples, split, budget.

    Examples:

        rsbench leaderboard --dataset mnist

        rsbench leaderboard --dataset mnist --sort-by 1.00

        rsbench leaderboard --dataset cifar10 --sigma 0.25 --common-examples

        rsbench leaderboard --dataset mnist --reported --format markdown --intervals -o leaderboards/mnist.md

        rsbench leaderboard --dataset mnist --format latex --columns method,acr,0.50,1.00

        rsbench leaderboard --dataset mnist --format json --radii 0:3.5:0.5
    """
    from rsbench.plugins import get_dataset
    from rsbench.results import board as boards
    from rsbench.results import figures, render
    from rsbench.store import open_store

    get_dataset(dataset)
    if fmt not in render.FORMATS:
        fail(f"unknown format {fmt!r}", "choose " + ", ".join(render.FORMATS))
    wanted = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    chosen_radii = boards.parse_radii(radii)
    boards.check_sort_by(sort_by, chosen_radii)
    if output is not None:
        check_output_path(output, make_folder=True)
    if plot is not None:
        for path in figures.plot_paths(plot):
            check_output_path(path, make_folder=True)
    store = open_store(db)
    if sigma is not None:
        check_sigma(sigma, "--sigma", "e.g. --sigma 0.5")
    if common_examples and reported:
        fail("--common-examples cannot include --reported rows", "a paper's table has no per-example results")
    board = boards.build(store, dataset, chosen_radii, reported, sort_by, sigma=sigma, common_examples=common_examples)
    if not board.rows:
        console.print(f"no complete certification runs for {dataset} in {store.url}", markup=False)
    if plot:
        for path in figures.plot(store, board, plot):
            console.print(f"wrote {path}", markup=False)
    if fmt == "rich" and output is None:
        render.print_table(board, wide, wanted)
        return
    text = render.render(board, "markdown" if fmt == "rich" else fmt, wanted, intervals)
    if output:
        atomic_write_text(output, text, make_folder=True)
        console.print(f"wrote {output}", markup=False)
    else:
        out(text.rstrip("\n"))


@app.command()
@handle_errors
def compare(
    first: Annotated[int, typer.Argument(help="A certification run's id (see `rsbench runs`).")],
    second: Annotated[int, typer.Argument(help="The run to compare it with.")],
    radius: Annotated[
        list[float] | None, typer.Option(help="A radius to compare at (repeatable); default the 0:2.5:0.25 grid.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="rich or json.")] = "rich",
    db: DbOption = None,
):
    """Compare two runs on the test examples both evaluated: certified accuracy at each radius with the
    difference, its 95% interval (Bonett-Price) and McNemar's exact p-value, and the ACR difference with a
    paired bootstrap interval. Differences are FIRST minus SECOND.

    Examples:

        rsbench compare 12 15

        rsbench compare 12 15 --radius 0.5 --radius 1.0 --format json
    """
    from rsbench.results import board as boards
    from rsbench.results.examples import compare_runs
    from rsbench.results.tables import comparison_table
    from rsbench.store import open_store

    if fmt not in ("rich", "json"):
        fail(f"unknown format {fmt!r}", "choose rich or json")
    radii = tuple(radius) if radius else boards.DEFAULT_RADII
    for value in radii:
        if not 0 <= value <= 100 or not math.isfinite(value):
            fail(f"--radius must be a radius from 0 to 100, not {value!r}", "e.g. --radius 0.5")
    result = compare_runs(open_store(db), first, second, radii)
    if fmt == "json":
        out(json_text(result, indent=2))
        return
    console.print(comparison_table(result))


# ------------------------------------------------------------------------------------------ reproduce


@app.command()
@handle_errors
def reproduce(
    experiment: Annotated[str | None, typer.Argument(help="Experiment name (see --list).")] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            help="smoke (end-to-end check), quick (CPU minutes per row), paper-subset (the paper's training and "
            "certification on every 20th test image) or full (the paper's protocol: GPU hours per row)."
        ),
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the experiments and what each budget costs.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what is left and its cost, then stop.")] = False,
    data_dir: DataDirOption = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run folders go.")] = Path("runs"),
    output_dir: Annotated[Path, typer.Option(help="Where the leaderboard markdown goes.")] = Path("leaderboards"),
    methods: Annotated[str | None, typer.Option(help="Only these methods, 'gaussian,stability'.")] = None,
    sigmas: Annotated[str | None, typer.Option(help="Only these σ, '0.5,1.0'.")] = None,
    device: DeviceOption = None,
    db: DbOption = None,
    progress: ProgressOption = True,
):
    """Reproduce one of the paper's tables: train, certify and rank every row, skipping what the store already
    holds (rerun after an interruption to continue). Prints what is left to do and its cost first (training
    epochs, certification draws, and an estimated time from this machine's earlier runs in the store), then
    the leaderboard.

    Examples:

        rsbench reproduce --list

        rsbench reproduce table2-slice --budget quick

        rsbench reproduce table3 --budget full --device cuda --dry-run

        rsbench reproduce table2 --budget quick --methods stability --sigmas 0.5,1.0
    """
    from rsbench import budgets
    from rsbench import reproduce as rp

    if list_ or experiment is None:
        from rsbench.results.tables import experiments_table, print_whole

        descriptions = {name: budgets.budget_text(b) for name, b in budgets.BUDGETS.items()}
        print_whole(console, experiments_table(rp.experiment_costs(), descriptions))
        return
    if budget is None:
        fail(
            f"choose a budget: --budget {', '.join(budgets.BUDGETS)} (full is the paper's protocol, hours per row)",
            "--budget quick runs on a CPU in minutes per row; `rsbench reproduce --list` shows what each costs",
        )
    only_methods = [m.strip() for m in methods.split(",")] if methods else None
    only_sigmas = list(parse_floats(sigmas, "--sigmas")) if sigmas is not None else None
    rp.plan(rp.load_experiment(experiment), budgets.get_budget(budget), str(runs_dir), only_methods, only_sigmas)
    from rsbench.results.render import render
    from rsbench.store import open_store

    store = open_store(db)  # once the experiment, budget and selection are valid
    if dry_run:
        rp.announce(experiment, budget, store, str(runs_dir), device, only_methods, only_sigmas)
        return
    board, timings = rp.reproduce(
        experiment, budget, store, str(data_dir) if data_dir else None, str(runs_dir), str(output_dir), device,
        progress, only_methods, only_sigmas,
    )  # fmt: skip
    for timing in timings:
        console.print(
            f"{timing['method']} σ={timing['sigma']} seed {timing['seed']}: train "
            f"{timing['train_seconds']:.0f} s, certify {timing['certify_seconds']:.0f} s",
            markup=False,
        )
    out(render(board, "markdown").rstrip("\n"))


# ------------------------------------------------------------------------------------------- plugins


@app.command()
@handle_errors
def plugins(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False):
    """List every plugin, where it comes from, and what it registers (with hyperparameters and presets).

    Example: `rsbench plugins --json`
    """
    from rsbench.plugins import describe_plugins
    from rsbench.results.tables import plugins_table

    listing = describe_plugins()
    if as_json:
        out(json.dumps(listing, indent=2, default=str))
        return
    console.print(plugins_table(listing))


# -------------------------------------------------------------------------------------------- launch


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "allow_interspersed_args": False}
)
@handle_errors
def launch(
    ctx: typer.Context,
    nproc_per_node: Annotated[int, typer.Option(help="Processes on this machine (one per GPU, or CPU ranks).")] = 2,
    nnodes: Annotated[str, typer.Option(help="Machines taking part, e.g. 2 (or MIN:MAX).")] = "1",
    node_rank: Annotated[int, typer.Option(help="This machine's rank (static rendezvous).")] = 0,
    rdzv_endpoint: Annotated[str | None, typer.Option(help="HOST:PORT every machine can reach.")] = None,
    rdzv_id: Annotated[str, typer.Option(help="Job id shared by every machine.")] = "rsbench",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the rendezvous (every machine to join).")] = 300,
):
    """Run an rsbench command (train or certify) on several processes with torchrun's elastic agent:
    the same as `torchrun --nproc-per-node K -m rsbench -- COMMAND ...`, with one error line if a rank or
    the rendezvous fails. The ranks stop when the launcher is interrupted, terminated or killed.

    Examples:

        rsbench launch --nproc-per-node 2 train --dataset mnist --sigma 0.5 --epochs 2

        rsbench launch --nproc-per-node 4 certify runs/mnist/gaussian-sigma0.5-seed0/checkpoint.pth.tar --n 10000

        rsbench launch --nnodes 2 --nproc-per-node 8 --rdzv-endpoint node0:29400 certify CK   # on each machine
    """
    quiet = "TORCH_CPP_LOG_LEVEL" not in os.environ and "torch" not in sys.modules
    if quiet:  # torch's C++ store logs each retry of the rendezvous with a stack; read once, as torch loads
        os.environ["TORCH_CPP_LOG_LEVEL"] = "FATAL"
    from rsbench.launch import LaunchInterrupted, ReportedError
    from rsbench.launch import launch as run_launch

    if quiet:
        del os.environ["TORCH_CPP_LOG_LEVEL"]  # the ranks keep torch's default

    try:
        run_launch(ctx.args, nproc_per_node, nnodes, node_rank, rdzv_endpoint, rdzv_id, timeout)
    except ReportedError as error:  # a rank's own line, already formatted
        print(error.line, file=sys.stderr)
        raise typer.Exit(2) from None
    except LaunchInterrupted as stop:
        print(
            f"rsbench: interrupted ({stop}); the ranks were stopped, completed work is saved, rerun the command "
            "to resume",
            file=sys.stderr,
        )
        raise typer.Exit(128 + stop.signal_number) from None


# ------------------------------------------------------------------------------------------ download


@app.command()
@handle_errors
def download(dataset: Annotated[str, typer.Argument(help="Dataset plugin name.")], data_dir: DataDirOption = None):
    """Download a dataset into the data root with torchvision (needs internet).

    Example: `rsbench download mnist --data-dir data`
    """
    from rsbench.data import data_root
    from rsbench.plugins import get_dataset

    spec = get_dataset(dataset)
    download = spec.download
    if download is None:
        fail(f"dataset {dataset!r} cannot be downloaded automatically", f"place it as {spec.layout}")
    root = data_root(data_dir)
    try:
        download(root)
    except (OSError, RuntimeError) as error:
        fail(
            f"downloading {dataset} failed: {str(error).splitlines()[0]}",
            f"check the network, or copy the files into {root} as {spec.layout}",
        )
    out(str(root))


# ---------------------------------------------------------------------------------------------- site


@app.command()
@handle_errors
def site(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the website into (created if absent).")],
    radii: Annotated[str | None, typer.Option(help="Radius grid start:stop:step or a list.")] = None,
    reported: Annotated[bool, typer.Option("--reported/--no-reported", help="Show the paper's rows.")] = True,
    db: DbOption = None,
):
    """Render the store as a static website: an index of datasets, per dataset and σ a sortable leaderboard
    table per protocol and a certified-accuracy plot, and one page per run. Open OUT/index.html from disk
    or serve the folder from any static host.

    Example: `rsbench site site/ --db official.db`
    """
    from rsbench.results.board import parse_radii
    from rsbench.results.site import build_site
    from rsbench.store import open_store

    pages = build_site(open_store(db), out_dir, parse_radii(radii), include_reported=reported)
    console.print(f"wrote {len(pages)} pages to {out_dir}", markup=False)
    out(str(out_dir / "index.html"))


db = typer.Typer(
    cls=OneLineErrors, help="The results store: schema migrations.", no_args_is_help=True, rich_markup_mode="markdown"
)
app.add_typer(db, name="db")


@db.command("upgrade")
@handle_errors
def db_upgrade(db: DbOption = None):
    """Upgrade a store of an older schema in place, in one transaction (back it up first: an older rsbench
    cannot read it afterwards). Every run and row is kept; per-run metrics are computed.

    Example: `rsbench db upgrade --db rsbench.db`
    """
    from rsbench.store import upgrade_store

    before, after = upgrade_store(db)
    console.print(
        f"the store was at schema version {before}" + (f", now {after}" if before != after else ": nothing to do"),
        markup=False,
    )


def main() -> None:
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a rank of torchrun or `rsbench launch`
        from rsbench.distributed import start_rank

        start_rank()
    try:
        app(prog_name="rsbench")
    except SystemExit as stop:
        if "rsbench.distributed" in sys.modules:  # imported by the commands that can run as torchrun ranks
            from rsbench.distributed import end_rank

            end_rank(stop.code)  # a rank ends here; any other process exits as usual
        raise
