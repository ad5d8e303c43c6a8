"""`fastdeploy-cudagraph-ext`: `plan` (what a deployment captures, and whether the worker accepts it) and `doctor`
(whether this machine's worker would start with the plugin). Exit 0: accepted / would start; 2: a user error or a
refusal, explained in one paragraph each."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict

from . import deployment
from .deepep_graphs import judge_normal_mode_graphs
from .capture_plan import (PlanError, expected_decode_len, judge_sizes, no_decode_graphs_reason, plan_deployment,
                           plan_inputs)


def _table(settings, verdicts) -> list[str]:
    step = settings.num_speculative_tokens + 1
    cap = str(settings.max_dispatch_tokens_per_rank) if settings.expert_parallel else "-"
    decode_len = expected_decode_len(settings.num_speculative_tokens)
    header = f"{'size':>6} {'batch':>6} {'decode_len':>10} {'tokens/rank':>12} {'cap':>5}  status"
    rows = [header, "-" * len(header)]
    for v in sorted(verdicts, key=lambda v: v.requested, reverse=True):
        size = v.size if v.size is not None else v.requested
        batch = size // step if size % step == 0 else "-"
        status = v.problem or (f"OK ({v.note})" if v.note else "OK")
        rows.append(f"{size:>6} {batch!s:>6} {decode_len:>10} {size:>12} {cap:>5}  {status}")
    return rows


def _describe(config: deployment.DeploymentConfig) -> list[str]:
    s = config.settings()
    mtp = (f"MTP k={s.num_speculative_tokens} ({s.num_speculative_tokens + 1} tokens per request)"
           if s.num_speculative_tokens else "no MTP (1 token per request)")
    if s.expert_parallel:
        depth = "DeepEP's default 1024" if s.nvshmem_qp_depth is None else str(s.nvshmem_qp_depth)
        ep = (f"expert parallel on ({s.splitwise_role}), DeepEP cap {s.max_dispatch_tokens_per_rank} tokens/rank"
              f"{' (internode)' if s.internode else ''}, NVSHMEM_QP_DEPTH {depth}")
    else:
        ep = ("expert parallel off: no DeepEP, no token cap to check; the plugin moves capture to its own stream"
              + (" and sizes MTP graphs" if s.num_speculative_tokens else ""))
    plugin = ("on (FD_CUDAGRAPH_EXT and FD_PLUGINS set)" if config.plugin_enabled() else
              "OFF: FD_CUDAGRAPH_EXT is not set to 1 in environment, so FastDeploy runs without the plugin and this "
              "plan only shows what it would do; add \"FD_CUDAGRAPH_EXT\": \"1\"")
    return [f"settings   : {mtp}; max-num-seqs {s.max_num_seqs}; {ep}",
            "defaults   : " + ("; ".join(config.assumed_defaults()) or "none assumed: every value is explicit"),
            f"plugin     : {plugin}"]


def _launch(config: deployment.DeploymentConfig) -> list[str]:
    nodes = config.nnodes()
    where = (f"launch (run this same line on each of the {nodes} nodes {', '.join(config.launch.ips)}; FastDeploy "
             f"takes a node's rank from the position of its own IP in --ips):" if nodes > 1 else "launch:")
    return [where, f"  {config.launch_command()}"]


def _plan(config: deployment.DeploymentConfig) -> dict:
    """Everything `plan` reports, as data (text and JSON are two renderings of it)."""
    settings = config.settings()
    out = {"ok": True, "settings": asdict(settings), "assumed_defaults": config.assumed_defaults(),
           "plugin_enabled": config.plugin_enabled(), "no_decode_graphs": no_decode_graphs_reason(settings),
           "captures": [], "warnings": [], "problems": [], "verdicts": [],
           "launch": {"nodes": config.launch.ips or [], "command": config.launch_command()}}
    verdicts, general = judge_sizes(plan_inputs(settings))
    deepep = judge_normal_mode_graphs(settings)  # DeepEP normal-mode kernels in graphs (deepep_graphs.py)
    if out["no_decode_graphs"] is not None:
        out["warnings"] = general + deepep.allowed  # not about decode graphs, but the server meets them all the same
        out["ok"], out["problems"] = not deepep.problems, deepep.problems
        return out
    out["verdicts"] = verdicts
    try:
        plan = plan_deployment(settings)
        out["captures"], out["warnings"] = [asdict(c) for c in plan.captures], plan.warnings + deepep.allowed
    except PlanError as error:
        out["ok"], out["problems"] = False, error.problems
    return out


def _plan_text(name: str, config: deployment.DeploymentConfig, result: dict) -> str:
    lines = [f"deployment : {name}" + (f" - {config.description}" if config.description else ""),
             *_describe(config), ""]
    if result["no_decode_graphs"] is not None:
        lines.append(f"no decode graphs: {result['no_decode_graphs']}")
        lines += [f"plan refused: {p}" for p in result["problems"]]
    else:
        lines += _table(config.settings(), result["verdicts"]) + [""]
        if result["ok"]:
            lines.append(f"plan OK: {len(result['captures'])} decode graphs; the worker accepts this deployment")
        else:
            lines.append("plan refused: the worker would stop before loading weights, because:")
            lines += [f"  - {p}" for p in result["problems"]]
    lines += [f"warning: {w}" for w in result["warnings"]]
    return "\n".join(lines + ["", *_launch(config)])


def _error(args: argparse.Namespace, error: deployment.ConfigError) -> int:
    if args.json:
        print(json.dumps({"ok": False, "error": "config", "config": error.source, "problems": error.problems},
                         indent=2))
    else:
        print(error, file=sys.stderr)
    return 2


def cmd_plan(args: argparse.Namespace) -> int:
    if args.schema:
        print(json.dumps(deployment.json_schema(), indent=2))
        return 0
    if args.list:
        entries = {n: json.loads(deployment.bundled_text(n)).get("description", "") for n in deployment.bundled_names()}
        print(json.dumps(entries, indent=2) if args.json else
              "\n".join(f"{n}{' (default)' if n == deployment.DEFAULT_CONFIG else ''}\n    {d}" for n, d in entries.items()))
        return 0
    try:
        name, config = deployment.load(args.config)
    except deployment.ConfigError as error:
        return _error(args, error)
    result = _plan(config)
    if args.json:
        result = {k: v for k, v in result.items() if k != "verdicts"}
        print(json.dumps({"deployment": name, **result}, indent=2))
    else:
        print(_plan_text(name, config, result))
    return 0 if result["ok"] else 2


def cmd_doctor(args: argparse.Namespace) -> int:
    from . import doctor

    if args.fd_src is not None:
        try:
            report = doctor.check_source_tree(args.fd_src)
        except doctor.UsageError as error:
            print(json.dumps({"ok": False, "error": "usage", "problems": [str(error)]}, indent=2) if args.json
                  else error, file=sys.stdout if args.json else sys.stderr)
            return 2
    else:
        deployed = None
        if args.config is not None:
            try:
                deployed = deployment.load(args.config)
            except deployment.ConfigError as error:
                return _error(args, error)
        report = doctor.run_doctor(deployed)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.text())
    return report.exit_code()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastdeploy-cudagraph-ext", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    plan = sub.add_parser("plan", help="decode capture plan of a deployment, and whether the worker accepts it")
    plan.add_argument("--config", help="a bundled config's name (see --list) or a JSON file; default: "
                                       f"{deployment.DEFAULT_CONFIG}")
    plan.add_argument("--list", action="store_true", help="list the bundled configs")
    plan.add_argument("--schema", action="store_true", help="print the config format as JSON Schema")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=cmd_plan)
    doctor = sub.add_parser("doctor", help="pre-flight check: would a worker here start with the plugin?")
    doctor.add_argument("--config", help="also check this deployment (a bundled name or a JSON file)")
    doctor.add_argument("--fd-src", metavar="DIR", help="per-group verdicts for a FastDeploy checkout (not imported)")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(func=cmd_doctor)
    args = parser.parse_args(argv)
    if args.command is None:  # the main job: plan the default bundled deployment
        args = parser.parse_args(["plan", *(argv or [])])
    logging.getLogger("fastdeploy_cudagraph_ext").addHandler(logging.NullHandler())  # warnings are in the report
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
