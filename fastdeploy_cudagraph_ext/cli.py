"""`fastdeploy-cudagraph-ext`: `plan` (what a deployment captures, and whether the worker accepts it) and `doctor`
(whether this machine's worker would start with the plugin)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import NoReturn

from . import deployment, fd_lines
from .deepep_graphs import judge_normal_mode_graphs
from .capture_plan import (CAPTURED, NOT_MULTIPLE, NOT_POSITIVE, OVER_CAP, OVER_MAX, ROUNDED, PlanError, Problem,
                           SizeVerdict, coverage, judge_sizes,
                           no_decode_graphs_reason, plan_deployment, plan_inputs)

DROPPED = "dropped_by_fastdeploy"  # a written size the line's FDConfig drops: its worker never sees it

# The one exit-code table of plan, doctor and --help (README's "The command line" shows it; a test pins both).
OK, INTERNAL_ERROR, REFUSED, USER_ERROR = 0, 1, 2, 3
EXIT_CODES = (
    (OK, "accepted", "plan: the worker accepts the deployment; doctor: the worker would start; --list, --schema, "
                     "--export, --help: done"),
    (INTERNAL_ERROR, "internal error", "a bug in this tool (one line names it; please report it)"),
    (REFUSED, "refused", "the input is valid and the worker would refuse it: a refused plan, or a doctor FAIL"),
    (USER_ERROR, "user error", "the tool cannot use its input: an unknown option, a config that is not valid (each "
                               "problem with its fix), a missing file, an unknown name"),
)
LONG_TABLE = 40  # rows past which the table shows its first and last rows only (--all: every row)
EDGE_ROWS = 10
TABLE_LEGEND = ("size: tokens in the graph; batch: warmup requests, size/(k+1); decode_len: steps each warmup request "
                "lives, so that it reaches decode (with MTP: (k+1)*2, or 2k+1 where FastDeploy 2.4/2.5's own loop "
                "captures; else 1); tokens/rank: what one decode step at "
                "this size dispatches through DeepEP; cap: DeepEP's num_max_dispatch_tokens_per_rank")


def _exit_table() -> str:
    return "exit codes:\n" + "\n".join(f"  {code}  {name}: {text}" for code, name, text in EXIT_CODES)


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a bad option; here that is a user error (3), as in the exit-code table."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USER_ERROR, f"{self.prog}: error: {message}\n")


def _print(text: str, stream=None) -> None:
    """Print; output piped into `head` and closed early ends quietly (the exit code stays the command's)."""
    try:
        print(text, file=stream or sys.stdout, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), (stream or sys.stdout).fileno())


def _status(verdict, plan_ok: bool, settings) -> str:
    step = settings.num_speculative_tokens + 1
    if verdict.status == DROPPED:
        return f"dropped by FastDeploy: over its largest size {verdict.note}"
    return {
        CAPTURED: "OK" if plan_ok else "valid (plan refused)",
        ROUNDED: (f"OK, rounded from {verdict.requested}" if plan_ok else
                  f"valid, rounded from {verdict.requested} (plan refused)"),
        OVER_CAP: f"over DeepEP cap {settings.max_dispatch_tokens_per_rank}",
        NOT_MULTIPLE: f"not a multiple of k+1={step}",
        OVER_MAX: f"over max_num_seqs*(k+1)={settings.max_num_seqs * step}",
        NOT_POSITIVE: "not a positive size",
    }[verdict.status]


def _rows(settings, verdicts, plan_ok: bool, fd: fd_lines.FDConfigSizes, factor: int) -> list[dict]:
    """One row per size the worker meets (in tokens), and one per written size FDConfig dropped."""
    step = settings.num_speculative_tokens + 1
    written = {tokens: size for size, tokens in fd.written.items()}
    dropped = [SizeVerdict(s * factor, None, note=str(fd.largest), status=DROPPED) for s in fd.dropped]
    rows = []
    for v in sorted([*verdicts, *dropped], key=lambda v: v.requested, reverse=True):
        size = v.size if v.size is not None else v.requested
        text = _status(v, plan_ok, settings)
        if factor > 1 and v.requested in written:
            text += f" (written {written[v.requested]} requests)"
        elif factor > 1 and v.status == DROPPED:
            text += f" (written {v.requested // factor} requests)"
        rows.append({"written": written.get(v.requested, v.requested // factor if v.status == DROPPED else None),
                     "requested": v.requested, "size": size, "status": v.status,
                     "captured": plan_ok and v.size is not None,
                     "batch": None if v.size is None else size // step, "text": text})
    return rows


def _table(settings, rows: list[dict], show_all: bool, decode_len: int) -> list[str]:
    cap = str(settings.max_dispatch_tokens_per_rank) if settings.expert_parallel else "-"
    header = f"{'size':>6} {'batch':>6} {'decode_len':>10} {'tokens/rank':>12} {'cap':>5}  status"

    def line(r: dict) -> str:
        batch = "-" if r["batch"] is None else r["batch"]
        return f"{r['size']:>6} {batch!s:>6} {decode_len:>10} {r['size']:>12} {cap:>5}  {r['text']}"

    body = [line(r) for r in rows]
    if len(rows) > LONG_TABLE and not show_all:
        body = (body[:EDGE_ROWS] + [f"{'...':>6}  {len(rows) - 2 * EDGE_ROWS} more sizes (--all shows every row)"]
                + body[-EDGE_ROWS:])
    return [header, "-" * len(header), *body]


def _describe(config: deployment.DeploymentConfig, line: fd_lines.LineSizing, chosen: str) -> list[str]:
    s = config.settings(line)
    mtp = (f"MTP k={s.num_speculative_tokens} ({s.num_speculative_tokens + 1} tokens per request)"
           if s.num_speculative_tokens else "no MTP (1 token per request)")
    if s.expert_parallel:
        depth = "DeepEP's default 1024" if s.nvshmem_qp_depth is None else str(s.nvshmem_qp_depth)
        ep = (f"expert parallel on (degree {config.expert_parallel_degree()}, {s.splitwise_role}), DeepEP cap "
              f"{s.max_dispatch_tokens_per_rank} tokens/rank{' (internode)' if s.internode else ''}, "
              f"NVSHMEM_QP_DEPTH {depth}")
    elif config.launch.enable_expert_parallel:
        ep = ("expert parallel OFF although enable-expert-parallel is set: tensor-parallel-size*data-parallel-size = "
              "1, and FastDeploy turns EP on only for a degree above 1 (use_ep = tp*dp > 1), so the flag has no "
              "effect: no DeepEP, no token cap to check")
    else:
        ep = ("expert parallel off: no DeepEP, no token cap to check; the plugin moves capture to its own stream"
              + (" and sizes MTP graphs" if s.num_speculative_tokens else ""))
    plugin = ("on (FD_CUDAGRAPH_EXT and FD_PLUGINS set)" if config.plugin_enabled() else
              "OFF: FD_CUDAGRAPH_EXT is not set to 1 in environment, so FastDeploy runs without the plugin and this "
              "plan only shows what it would do; add \"FD_CUDAGRAPH_EXT\": \"1\"")
    return [f"fastdeploy : {line.label()}, {chosen}: {line.meaning(s.num_speculative_tokens)}",
            f"settings   : {mtp}; max-num-seqs {s.max_num_seqs}; {ep}",
            "defaults   : " + ("; ".join(config.assumed_defaults()) or "none assumed: every value is explicit"),
            f"plugin     : {plugin}"]


def _launch(config: deployment.DeploymentConfig, result: dict) -> list[str]:
    launch = result["launch"]
    if launch["command"] is None:
        return [f"launch: not shown: {launch['withheld']}"]
    nodes = config.nnodes()
    where = (f"launch (run this same line on each of the {nodes} nodes {', '.join(config.launch.ips)}; FastDeploy "
             f"takes a node's rank from the position of its own IP in --ips)" if nodes > 1 else "launch")
    sizes = config.launch.graph_optimization_config.cudagraph_capture_sizes
    carries = f"; it carries {len(sizes)} capture sizes" if sizes and len(sizes) > LONG_TABLE else ""
    return [f"{where}{carries}:", f"  {launch['command']}"]


def _plan(config: deployment.DeploymentConfig, line: fd_lines.LineSizing, chosen: str = "--fd-line") -> dict:
    """Everything `plan` reports for one FastDeploy line, as data (text and JSON are two renderings of it)."""
    settings = config.settings(line)
    k = settings.num_speculative_tokens
    fd = config.fdconfig_sizes(line)
    out = {"ok": True, "fastdeploy_line": {"line": line.line, "commit": line.commit, "chosen": chosen,
                                           "sizes_mean": line.meaning(k)},
           "settings": asdict(settings), "assumed_defaults": config.assumed_defaults(),
           "plugin_enabled": config.plugin_enabled(), "no_decode_graphs": no_decode_graphs_reason(settings),
           "expert_parallel_degree": config.expert_parallel_degree(), "decode_len": line.decode_len(k),
           "captures": [], "warnings": [], "problems": [], "fixes": [], "sizes": []}
    refusals = config.line_problems(line)  # FastDeploy itself stops first
    verdicts, general = judge_sizes(plan_inputs(settings))
    deepep = judge_normal_mode_graphs(settings)  # DeepEP normal-mode kernels in graphs (deepep_graphs.py)
    try:
        plan = plan_deployment(settings)  # refuses DeepEP normal-mode graphs even without decode graphs
    except PlanError as error:
        plan = None
        refusals += [Problem(text, tuple(fixes)) for text, fixes in zip(error.problems, error.fixes)]
    if out["no_decode_graphs"] is not None:
        out["warnings"] = [p.text for p in general] + deepep.allowed  # the server meets them all the same
    else:
        if plan is not None:
            out["captures"], out["warnings"] = [asdict(c) for c in plan.captures], plan.warnings + deepep.allowed
        if fd.dropped:
            out["warnings"].append(f"FastDeploy {line.line} keeps sizes up to {fd.largest} tokens and drops the "
                                   f"larger written sizes {list(fd.dropped)} without a word: they are not captured")
    if refusals:
        out["ok"], out["captures"] = False, []
        out["problems"] = [p.text for p in refusals]
        out["fixes"] = [[[asdict(e) for e in deployment.plan_fix_edits(f)] for f in p.fixes] for p in refusals]
    if out["no_decode_graphs"] is None:
        factor = k + 1 if line.sizes_are_requests else 1
        out["sizes"] = _rows(settings, verdicts, out["ok"], fd, factor)
    # which graph serves each decode batch 1..max_num_seqs (an accepted plan only: a refused one never runs)
    out["coverage"] = None if not out["ok"] else coverage([c["capture_size"] for c in out["captures"]],
                                                          settings.max_num_seqs, k).to_dict()
    withheld = None if out["ok"] else ("the worker would refuse this plan (see the problems above), so this line "
                                       "would stop at start-up; fix them and run plan again")
    out["launch"] = {"nodes": config.launch.ips or [], "command": None if withheld else config.launch_command(),
                     "withheld": withheld,
                     "capture_sizes": len(config.launch.graph_optimization_config.cudagraph_capture_sizes or [])}
    return out


def _plan_text(name: str, config: deployment.DeploymentConfig, result: dict, show_all: bool,
               line: fd_lines.LineSizing) -> str:
    lines = [f"deployment : {name}" + (f" - {config.description}" if config.description else ""),
             *_describe(config, line, result["fastdeploy_line"]["chosen"]), ""]
    if result["no_decode_graphs"] is not None:
        lines.append(f"no decode graphs: {result['no_decode_graphs']}")
        if not result["ok"]:
            lines.append("plan refused: the worker would stop before loading weights, because:")
            lines += [f"  - {p}" for p in result["problems"]]
    else:
        lines += _table(config.settings(line), result["sizes"], show_all, result["decode_len"])
        lines += [f"({TABLE_LEGEND})", ""]
        if result["ok"]:
            lines.append(f"plan OK: {len(result['captures'])} decode graphs; the worker accepts this deployment")
        else:
            lines.append("plan refused: the worker would stop before loading weights, because:")
            lines += [f"  - {p}" for p in result["problems"]]
    lines += _coverage_text(result["coverage"], show_all)
    lines += [f"warning: {w}" for w in result["warnings"]]
    return "\n".join(lines + ["", *_launch(config, result)])


def _coverage_text(cover: dict | None, show_all: bool) -> list[str]:
    """One summary line, then one line per range of decode batch sizes (first and last rows of a long list)."""
    if cover is None:
        return []
    lines = [f"coverage   : {cover['served']} of {cover['batches']} decode batch sizes ({cover['served_share']:.0%}) "
             f"replay a graph, mean padding {cover['mean_padding']:.1%}"
             + ("" if cover["served"] == cover["batches"] else
                f"; {cover['batches'] - cover['served']} run eagerly")]
    body = []
    for r in cover["ranges"]:
        batches = f"{r['first']}" if r["first"] == r["last"] else f"{r['first']}-{r['last']}"
        if r["graph"] is None:
            body.append(f"  batches {batches:<11} eager: no graph holds them (FastDeploy runs them without one)")
        else:
            pad = (f"{r['padding_min']:.0%}" if r["padding_min"] == r["padding_max"] else
                   f"{r['padding_min']:.0%}-{r['padding_max']:.0%}, mean {r['padding_mean']:.1%}")
            body.append(f"  batches {batches:<11} graph {r['graph']} (padding {pad})")
    if len(body) > LONG_TABLE and not show_all:
        body = body[:EDGE_ROWS] + [f"  ... {len(body) - 2 * EDGE_ROWS} more ranges (--all shows every one)"] \
            + body[-EDGE_ROWS:]
    return lines + body


def _error(args: argparse.Namespace, error: deployment.ConfigError) -> int:
    if args.json:
        _print(json.dumps({"ok": False, "error": "config", "config": error.source, "problems": error.problems,
                           "fixes": [[[asdict(e) for e in fix] for fix in fixes] for fixes in error.fixes]},
                          indent=2))
    else:
        _print(str(error), sys.stderr)
    return USER_ERROR


def _export(args: argparse.Namespace) -> int:
    if len(args.export) > 2:
        return _usage(args, f"--export takes a bundled config's NAME and optionally a FILE, not {len(args.export)} "
                            f"values. Fix: plan --export NAME [FILE]")
    name = args.export[0].removesuffix(".json")
    if name not in deployment.bundled_names():
        return _usage(args, f"--export {args.export[0]}: not a bundled config. Fix: one of "
                            f"{', '.join(deployment.bundled_names())}")
    target = Path(args.export[1] if len(args.export) == 2 else f"{name}.json")
    if target.exists():
        return _usage(args, f"--export: {target} exists; nothing written. Fix: give another FILE, or move {target} "
                            f"away")
    try:
        target.write_text(deployment.bundled_text(name))
    except OSError as error:
        return _usage(args, f"--export: cannot write {target} ({error.strerror}). Fix: give a FILE in a writable "
                            f"folder")
    _print(json.dumps({"ok": True, "exported": name, "file": str(target)}) if args.json else
           f"wrote {target} (bundled config {name}): edit it for your deployment, then run plan --config {target}")
    return OK


def _usage(args: argparse.Namespace, message: str) -> int:
    if args.json:
        _print(json.dumps({"ok": False, "error": "usage", "problems": [message]}, indent=2))
    else:
        _print(message, sys.stderr)
    return USER_ERROR


def cmd_plan(args: argparse.Namespace) -> int:
    if args.schema:
        _print(json.dumps(deployment.json_schema(), indent=2))
        return OK
    if args.list:
        entries = {n: json.loads(deployment.bundled_text(n)).get("description", "") for n in deployment.bundled_names()}
        _print(json.dumps(entries, indent=2) if args.json else
               "\n".join(f"{n}{' (default)' if n == deployment.DEFAULT_CONFIG else ''}\n    {d}" for n, d in entries.items()))
        return OK
    if args.export:
        return _export(args)
    try:
        name, config = deployment.load(args.config)
    except deployment.ConfigError as error:
        return _error(args, error)
    line, chosen = ((fd_lines.line(args.fd_line), "--fd-line") if args.fd_line else fd_lines.installed_or_newest())
    result = _plan(config, line, chosen)
    if args.json:
        _print(json.dumps({"deployment": name, **result}, indent=2))
    else:
        _print(_plan_text(name, config, result, args.all, line))
    return OK if result["ok"] else REFUSED


def cmd_doctor(args: argparse.Namespace) -> int:
    from . import doctor

    if args.fd_src is not None:
        try:
            report = doctor.check_source_tree(args.fd_src)
        except doctor.UsageError as error:
            return _usage(args, str(error))
    else:
        deployed = None
        if args.config is not None:
            try:
                deployed = deployment.load(args.config)
            except deployment.ConfigError as error:
                return _error(args, error)
        report = doctor.run_doctor(deployed)
    _print(json.dumps(report.to_dict(), indent=2) if args.json else report.text())
    return REFUSED if report.failures() else OK


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastdeploy-cudagraph-ext", description=__doc__, epilog=_exit_table(),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    plan = sub.add_parser("plan", help="decode capture plan of a deployment, and whether the worker accepts it",
                          description="The decode capture plan of a deployment config and whether the worker "
                                      f"accepts it. Table columns: {TABLE_LEGEND}.",
                          epilog=_exit_table(), formatter_class=argparse.RawDescriptionHelpFormatter)
    plan.add_argument("--config", help="a bundled config's name (see --list) or a JSON file; default: "
                                       f"{deployment.DEFAULT_CONFIG}")
    plan.add_argument("--list", action="store_true", help="list the bundled configs")
    plan.add_argument("--schema", action="store_true", help="print the config format as JSON Schema")
    plan.add_argument("--export", nargs="+", metavar=("NAME", "FILE"),
                      help="write the bundled config NAME to FILE (default NAME.json here; never overwrites) to "
                           "start your own deployment config from")
    plan.add_argument("--fd-line", choices=list(fd_lines.lines()),
                      help="the FastDeploy release line whose FDConfig lays the sizes out (what a size means, the "
                           "default ladder and its cap); default: the installed FastDeploy's line, else the newest")
    plan.add_argument("--all", action="store_true", help=f"show every row of a table longer than {LONG_TABLE} rows")
    plan.add_argument("--json", action="store_true",
                      help="print the result as one JSON object (errors too, with each problem's fixes as edits)")
    plan.set_defaults(func=cmd_plan)
    doctor = sub.add_parser("doctor", help="pre-flight check: would a worker here start with the plugin?",
                            epilog=_exit_table(), formatter_class=argparse.RawDescriptionHelpFormatter)
    doctor.add_argument("--config", help="also check this deployment (a bundled name or a JSON file)")
    doctor.add_argument("--fd-src", metavar="DIR", help="per-group verdicts for a FastDeploy checkout (not imported)")
    doctor.add_argument("--json", action="store_true", help="print the report as one JSON object")
    doctor.set_defaults(func=cmd_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:  # the main job: plan the default bundled deployment
            args = parser.parse_args(["plan", *(argv or [])])
    except SystemExit as done:  # --help (0) or a bad option (3, said on stderr)
        return int(done.code or 0)
    logging.getLogger("fastdeploy_cudagraph_ext").addHandler(logging.NullHandler())  # warnings are in the report
    try:
        return args.func(args)
    except Exception as error:  # noqa: BLE001 - a bug in this tool: one line, and the internal-error code
        _print(f"fastdeploy-cudagraph-ext: internal error: {type(error).__name__}: {error} (a bug in this tool; "
               f"please report it with the command line)", sys.stderr)
        return INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
