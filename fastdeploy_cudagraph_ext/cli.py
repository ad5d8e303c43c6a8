"""`fastdeploy-cudagraph-ext`: `plan` (capture sizes for a deployment) and `doctor` (what this machine has)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from . import deployment
from .capture_plan import PlanError, build_plan, expected_decode_len, judge_sizes


def _plan_table(dep: deployment.Deployment) -> tuple[str, dict, int]:
    inputs = dep.plan_inputs()
    verdicts, general = judge_sizes(inputs)
    step = inputs.num_speculative_tokens + 1
    cap = inputs.max_dispatch_tokens_per_rank
    header = f"{'size':>6} {'batch':>6} {'decode_len':>10} {'tokens/rank':>12} {'cap':>5}  status"
    rows = [header, "-" * len(header)]
    for v in sorted(verdicts, key=lambda v: v.requested, reverse=True):
        size = v.size if v.size is not None else v.requested
        batch = size // step if size % step == 0 else "-"
        decode_len = expected_decode_len(inputs.num_speculative_tokens)
        cap_text = str(cap) if inputs.expert_parallel else "-"
        status = "OK" if v.size is not None and not v.problem else (v.problem or v.note)
        if v.size is not None and v.note:
            status = f"OK ({v.note})"
        rows.append(f"{size:>6} {batch!s:>6} {decode_len:>10} {size:>12} {cap_text:>5}  {status}")
    try:
        plan = build_plan(inputs)
        summary, payload, code = f"plan OK: {len(plan.captures)} decode graphs", plan.to_dict(), 0
    except PlanError as error:
        summary, payload, code = str(error), {"inputs": asdict(inputs), "problems": error.problems}, 2
    for problem in general:
        if problem not in summary:
            summary += f"\n  - {problem}"
    text = "\n".join([
        f"deployment : {dep.name} - {dep.description}",
        f"MTP k      : {inputs.num_speculative_tokens} (tokens per request {step}); max_num_seqs "
        f"{inputs.max_num_seqs}; expert parallel {'on' if inputs.expert_parallel else 'off'}"
        + (f", DeepEP cap {cap} tokens/rank{' (internode)' if inputs.internode else ''}" if inputs.expert_parallel else ""),
        "",
        *rows,
        "",
        summary,
        "",
        "launch:",
        f"  {dep.launch_command()}",
    ])
    return text, payload, code


def cmd_plan(args: argparse.Namespace) -> int:
    try:
        dep = deployment.load(args.config)
    except PlanError as error:
        print(error, file=sys.stderr)
        return 2
    text, payload, code = _plan_table(dep)
    if args.json:
        print(json.dumps({"deployment": dep.name, **payload}, indent=2))
    else:
        print(text)
    return code


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import format_report, run_doctor

    report = run_doctor()
    print(json.dumps(asdict(report), indent=2) if args.json else format_report(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastdeploy-cudagraph-ext", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    plan = sub.add_parser("plan", help="decode capture plan of a deployment config (default: the embedded one)")
    plan.add_argument("--config", help="deployment config JSON (see configs/); default: "
                                       f"the embedded {deployment.DEFAULT_CONFIG}")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=cmd_plan)
    doctor = sub.add_parser("doctor", help="installed stack, c10 bridge and each patch's verdict here")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(func=cmd_doctor)
    args = parser.parse_args(argv)
    if args.command is None:  # the main job: plan the embedded default deployment
        args = parser.parse_args(["plan", *(argv or [])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
