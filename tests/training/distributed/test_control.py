"""The files a run's pipeline and its training processes talk through."""

import pickle

from dreambooth_core.training.chunk import ChunkOutcome
from dreambooth_core.training.distributed.control import ControlFolder, Relay, Report


def test_rank_0s_relayed_callbacks_reach_the_pipeline_in_order_before_its_report(tmp_path):
    control = ControlFolder(tmp_path)
    relay = pickle.loads(pickle.dumps(Relay(tmp_path, 3, "progress")))  # it travels to rank 0
    relay("half")
    relay("all")
    Relay(tmp_path, 2, "progress")("an earlier order's")
    outcome = ChunkOutcome(end=4, started_at=0, trained_steps=4, mean_loss=0.5)
    control.report(3, Report(outcome=outcome))
    heard = []
    report = control.wait_report(3, lambda: True, lambda kind, value: heard.append((kind, value)))
    assert report.outcome == outcome
    assert heard == [("progress", "half"), ("progress", "all")]


def test_waiting_ends_when_the_writer_is_gone():
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        assert ControlFolder(folder).wait_report(0, lambda: False) is None
        assert ControlFolder(folder).take_order(0, lambda: False) is None
