"""lens_openrlhf.tblogs: the one TensorBoard reader, on event files written here with torch's SummaryWriter."""

import time

import pytest
from torch.utils.tensorboard import SummaryWriter

from lens_openrlhf.tblogs import TensorBoardLogError, read_scalars


def test_reads_every_scalar_and_a_resumed_run_keeps_the_later_value(tmp_path):
    run = tmp_path / "tb" / "demo"
    w = SummaryWriter(str(run))
    for step in (1, 2, 3):
        w.add_scalar("train/reward", 0.1 * step, step)
    w.add_scalar("eval/unbiased_pass@1", 0.5, 3)
    w.close()
    time.sleep(0.05)  # a resumed run writes a second event file, later in wall time
    w = SummaryWriter(str(run))
    w.add_scalar("train/reward", 0.9, 3)
    w.close()
    got = read_scalars(tmp_path / "tb")
    assert got["train/reward"] == pytest.approx({1: 0.1, 2: 0.2, 3: 0.9})
    assert got["eval/unbiased_pass@1"] == {3: 0.5}


def test_errors_name_the_folder(tmp_path):
    with pytest.raises(TensorBoardLogError, match=r"LENS: no TensorBoard event files .* under .*empty"):
        (tmp_path / "empty").mkdir()
        read_scalars(tmp_path / "empty", "LENS")
    SummaryWriter(str(tmp_path / "quiet")).close()
    with pytest.raises(TensorBoardLogError, match="hold no scalars"):
        read_scalars(tmp_path / "quiet")
