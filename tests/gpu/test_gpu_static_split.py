"""A static split-graph call on real CUDA: graph pieces replay on the stream they were captured on (as Paddle's
CUDAGraph::Replay does) while the op between them runs on the framework's current stream (as Paddle runs the ops
FastDeploy puts on FLAGS_cuda_graph_blacklist). The plugin runs such a call in the capture scope; the replay scope
alone (waits only at the call's edges) lets the pieces race the op between them.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Callable

import pytest

torch = pytest.importorskip("torch", reason="tests/gpu need PyTorch with CUDA: run them on the GPU machine with PYTHONPATH=.")

from torch_device import FrameworkGraph  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SIZE = 1 << 16


class SplitProgram:
    """out = ((inp * 2) + 1) * 3: piece one, a slow op on the current stream (the attention), piece two."""

    def __init__(self, fw, policy) -> None:
        self.fw, self.dev = fw, torch.cuda.current_device()
        self.inp = torch.zeros(SIZE, device="cuda")
        self.first, self.mid, self.out = (torch.zeros(SIZE, device="cuda") for _ in range(3))
        self.pieces = (FrameworkGraph(fw, self.dev), FrameworkGraph(fw, self.dev))
        with policy.capture_scope(self.dev):  # captured as the plugin captures a static call
            self._piece_one()
            self._attention()
            self._piece_two()  # warmup
            with self.pieces[0].capture():
                self._piece_one()
            self._attention()
            with self.pieces[1].capture():
                self._piece_two()

    def _piece_one(self) -> None:
        with self.fw.framework_ops(self.dev):
            torch.mul(self.inp, 2.0, out=self.first)

    def _attention(self) -> None:
        with self.fw.framework_ops(self.dev):
            torch.cuda._sleep(1_000_000)  # slow: an unordered second piece runs before it writes
            torch.add(self.first, 1.0, out=self.mid)

    def _piece_two(self) -> None:
        with self.fw.framework_ops(self.dev):
            torch.mul(self.mid, 3.0, out=self.out)

    def call(self) -> None:
        """One replayed forward: what run_program does with a captured split program."""
        self.pieces[0].replay()
        self._attention()
        self.pieces[1].replay()


def _wrong_steps(fw, program: SplitProgram, scope: Callable[[int], AbstractContextManager]) -> int:
    wrong = 0
    for i in range(20):
        with fw.framework_ops(program.dev):
            program.inp.fill_(float(i))
        with scope(program.dev):
            program.call()
        with fw.framework_ops(program.dev):
            got = program.out.clone()
        torch.cuda.synchronize()
        wrong += not torch.equal(got, torch.full_like(got, (2.0 * i + 1.0) * 3.0))
    return wrong


def test_a_static_call_in_the_capture_scope_runs_its_pieces_and_the_op_between_them_in_order(fw, policy) -> None:
    program = SplitProgram(fw, policy)
    assert _wrong_steps(fw, program, policy.capture_scope) == 0
    assert fw.current_stream(program.dev).cuda_stream != policy.capture_stream(program.dev).cuda_stream  # restored


def test_the_replay_scope_alone_lets_the_pieces_race_the_op_between_them(fw, policy) -> None:
    """The control: the test above has teeth, since the same call under the replay scope reads stale values."""
    program = SplitProgram(fw, policy)
    assert _wrong_steps(fw, program, policy.replay_scope) > 0
