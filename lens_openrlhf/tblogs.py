"""Reading the TensorBoard logs OpenRLHF writes (``--logger.tensorboard_dir``): one reader for the demo,
the benchmarks and the cluster report."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

Series = Dict[int, float]


class TensorBoardLogError(ValueError):
    """The event files cannot be read, or hold no scalars; the message names the folder."""


def read_scalars(folder, label: str = "run") -> Dict[str, Series]:
    """tag -> {step: value} of every scalar in the event files under ``folder`` (its sub-folders too).

    Several event files (a resumed run writes a new one) are merged in wall-time order, so a step logged
    twice keeps its later value. Raises :class:`TensorBoardLogError` when there is no event file, when one
    cannot be read, or when none holds a scalar (the job logged no step yet, or did not flush).
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = Path(folder)
    files = sorted(folder.rglob("events.out.tfevents.*"))
    if not files:
        raise TensorBoardLogError(f"{label}: no TensorBoard event files (events.out.tfevents.*) under {folder}")
    events = []
    for run_dir in sorted({f.parent for f in files}):
        acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
        try:
            acc.Reload()
        except Exception as e:  # noqa: BLE001 - a corrupt file: say which folder
            raise TensorBoardLogError(
                f"{label}: cannot read the TensorBoard event files in {run_dir}: {type(e).__name__}: {e}"
            ) from e
        for tag in acc.Tags().get("scalars", []):
            events.extend((ev.wall_time, tag, int(ev.step), float(ev.value)) for ev in acc.Scalars(tag))
    if not events:
        raise TensorBoardLogError(
            f"{label}: the TensorBoard event files in {folder} ({', '.join(f.name for f in files)}) hold no "
            "scalars: the job logged no step yet (OpenRLHF writes after each --logger.logging_steps steps) or "
            "did not flush before it ended"
        )
    out: Dict[str, Series] = {}
    for _, tag, step, value in sorted(events, key=lambda e: e[0]):
        out.setdefault(tag, {})[step] = value
    return out


def read_tensorboard(tb_dir: Path) -> Dict[str, Dict[int, float]]:
    """tag -> {step: value} of a run's TensorBoard logs ({} when the run logged nothing)."""
    try:
        return read_scalars(tb_dir, "run")
    except TensorBoardLogError:
        return {}
