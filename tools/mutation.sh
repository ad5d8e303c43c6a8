#!/usr/bin/env bash
# Mutation testing (issue 11): mutmut over the safety-critical modules, the score printed per module. Not CI.
#   tools/mutation.sh                      # the default modules
#   JOBS=2 tools/mutation.sh registry      # one module (c10_bridge spawns child processes: over an hour on 2
#                                          # cores, about 6 minutes with JOBS=30 on 32)
#   tools/mutation.sh patch.patch_cudagraph_piecewise_backend   # a patch: patch.<its module>
# Needs mutmut 3 (configured in pyproject.toml [tool.mutmut]); PYTHON picks the interpreter (default python3 on PATH).
# mutmut 3 does not mutate decorated functions, so the policy's and the DeepEP protocol's scopes take
# contextmanager by assignment and are mutated like the rest. Score = (killed + timeout + segfault) / (all mutants
# that ran): a mutant that crashes the test process is detected; "no tests" mutants count as survivors.
# The c10 probe's children: mutmut maps tests to functions by calls in ITS process, so code that only runs in a
# child is "no tests". In the stats run the children run unmutated code (tests/conftest.py drops the stats mode
# from their environment: from their neutral cwd they could not load mutmut's config); the child's side is also
# tested in-process (tests/test_c10_bridge.py, "the child's side"), which is how its mutants are counted and run.
# Known equivalent mutants (no test can kill them; they count as survivors in the score):
#   deepep_protocol  LowLatencyBufferProtocol.__init__: phase None -> "" (both differ from "decode")
#   capture_plan     _nearest_multiples: 0 < s -> 1 < s (s is 0 or a multiple of k+1 >= 2)
#                    default_ladder: s*t <= max -> s*t < max (max itself is added right after)
#                    judge_sizes: decode_tokens > cap -> >= cap for over_cap (at equality every size that is not
#                    over max_num_seqs*(k+1) is at most the cap, so none is marked over it)
#   activation       _ensure_visible_logging: StreamHandler(sys.stderr) -> StreamHandler(None) (its default is stderr)
#   stream_policy    torch_api_extensions_may_launch: default "0" -> "XX0XX" (neither is a true value)
#                    _capture_scope, _eager_extension_scope: the no-op undo `lambda: None` -> `lambda: 0` (its
#                    result is never read)
#   registry         revert: reports.pop(name, None) -> reports.pop(name) (an applied patch always has its report)
#                    _install: report.variant or "" -> or "XXXX" (an applied report always has its variant)
#                    _class_methods: base.rsplit(".", 1)[-1] -> rsplit(".") / rsplit(".", 2) (the same last part)
#                    _live_methods: getattr_static(cls, name, None) -> no default (dir() names are found statically)
#                    _names: p != "*" -> p != "XX*XX" (a bare "*" gives the empty name, which no contract uses)
#                    _class_members: the seen-set mutants (id(None), add(None)) only walk a class again (bases are
#                    acyclic; members are a set); rsplit(".", 2)/rsplit(".") give the same last part
#                    _spelling: rsplit/split variants on "Class.attr" names (one dot: the same last part)
#                    _declared_names: dotted.partition(".") -> rpartition (every declared name is "Class.attr")
#                    _module_facts: read_text(encoding="utf-8") -> "UTF-8" (codec names ignore case) or None (the
#                    locale's encoding, UTF-8 where these tests run)
#   patch.patch_cudagraph_piecewise_backend
#                    _inside_capture_model: sys._getframe(1) -> (2) (the walk starts at the plugin's own caller,
#                    _capture_call; a runner's capture_model is above both)
#                    _shape_and_mode_keyed: getattr(backend, "speculative_decoding", False) -> None (both false)
#   patch.patch_gpu_model_runner_capture
#                    choose: the second facts.get(CONFIG_MODULE, NO_FACTS) -> None / no default (counted_methods has
#                    read that module's facts already, or refused)
#                    _is_mtp_decode_capture: cudagraph_only_prefill default False -> None (both false)
#                    runner_contract (and any contract built at import): not a survivor but an artefact; mutmut's
#                    forked runs keep the package imported unmutated and deselect test_declared_names.py, which fails
#                    on hand-applied mutants of it
#   deepep_graphs    getattr/get defaults False/0 -> None or dropped where bool() or `or 0` reads them; the
#                    FD_USE_PFCC_DEEP_EP default "0" -> "XX0XX" (neither is a true value, as for stream_policy);
#                    judge_normal_mode_graphs: getattr(settings, "deepep", None) -> no default (DeploymentSettings
#                    always has the field)
#   patch.patch_xpu_model_runner_capture
#                    choose: the second facts.get(MODULE, NO_FACTS) -> None / no default (the first read found it)
#   deepep_agreement _Exchange.__init__: done = False -> None (both false)
#   c10_bridge       _parse_reports, _run_children: decode("utf-8") -> "UTF-8" (codec names ignore case)
#                    _run_children: the 1-second floor of a late child's timeout -> 2 seconds (a tuning value:
#                    no test pins it without racing the child)
#                    _Calls.get / from_external: default fill 0 -> 1 (only the callee's object is read back)
#                    _Calls.__init__ (equivalent on x86-64 SysV, where these tests run): an int8 argtype dropped (the
#                    callee reads the low byte of the same register); the restype of an sret or void function changed
#                    or dropped (the result is read from our buffer, never from the return value); an argtype of
#                    set dropped (ctypes passes the same object); _in_memory_struct(offset + 9) (whole words: same size)
#                    _calibrate: range(0, len(raw) - 7, 8) -> len(raw) + 7 (the extra offsets read < 8 bytes: below
#                    any sentinel)
#                    _FakeStreams (our g++ fakes' side doors): an int8 argtype dropped (x86-64 passes the small int
#                    alike); create_string_buffer(16) -> 17 (any live buffer is a unique stream handle)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
MUTMUT=${MUTMUT:-$(dirname "$PYTHON")/mutmut}
MODULES=("$@")
[ ${#MODULES[@]} -gt 0 ] || MODULES=(stream_policy c10_bridge deepep_protocol capture_plan registry activation)
JOBS=${JOBS:-$(nproc)}

rm -rf mutants
globs=()
for m in "${MODULES[@]}"; do globs+=("fastdeploy_cudagraph_ext.$m.*"); done
start=$(date +%s)
"$MUTMUT" run --max-children "$JOBS" "${globs[@]}" > mutants.log 2>&1 || { tail -40 mutants.log; exit 1; }
echo "mutmut ran ${#MODULES[@]} module(s) in $(( $(date +%s) - start )) s with $JOBS worker(s); log: mutants.log"

"$PYTHON" - "${MODULES[@]}" <<'PY'
import json, sys
from collections import Counter
from mutmut.stats import status_by_exit_code

worst = 100.0
for module in sys.argv[1:]:
    meta = json.load(open(f"mutants/fastdeploy_cudagraph_ext/{module.replace('.', '/')}.py.meta"))  # patch.x: a subpackage
    status = Counter(status_by_exit_code[code] for code in meta["exit_code_by_key"].values())
    ran = sum(n for s, n in status.items() if s != "not checked")
    killed = status["killed"] + status["timeout"] + status["segfault"] + status["caught by type check"]
    score = 100.0 * killed / ran if ran else 0.0
    worst = min(worst, score)
    survivors = sorted(k for k, c in meta["exit_code_by_key"].items() if status_by_exit_code[c] not in ("killed", "timeout", "segfault"))
    print(f"{module:16s} {score:5.1f}% killed ({killed}/{ran})  " + ", ".join(f"{s}: {n}" for s, n in status.items()))
    for name in survivors:
        print(f"    survived: {name}   (mutmut show '{name}')")
print(f"lowest module score: {worst:.1f}% (target: 90%)")
PY
