"""Replay a finished run's epoch times through the time budget: where would it have ended?

``TimeBudget`` predicts an epoch's time from those this process has seen (the median of the
last three after its first). This replays a run's own epoch times, read from its TensorBoard
logs, through ``TimeBudget`` and through the rule it replaced (the last epoch's time alone),
and prints, for each, after which epochs the end moved, the epochs trained and the minutes
they took against the budget. Epochs a rule trains beyond those the run recorded are given the
median time of the run's last three (printed as "extrapolated"). No model is trained.

    python benchmarks/replay_time_budget.py runs/celeba-cpu [--budget MINUTES] [--epochs N]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from celebalib import runs, train


class LastEpoch(train.TimeBudget):
    """The rule before: the last epoch's time alone predicts the rest."""

    def seconds_per_epoch(self) -> float:
        return self.durations[-1]


class Model:
    """What a callback touches of the model it is set on."""

    stop_training = False


def epoch_end_times(run: Path) -> list[float]:
    """Wall times (seconds since the epoch) at which each epoch's validation was logged."""
    folder = runs.RunFiles(run).logs / "validation"
    files = sorted(folder.glob("events.out.tfevents.*"))
    if len(files) != 1:
        raise SystemExit(f"{folder}: expected the event file of one process, found {len(files)}")
    times = {}
    for event in EventFileLoader(str(files[0])).Load():
        if any(value.tag == "epoch_loss" for value in event.summary.value):
            times[int(event.step)] = event.wall_time
    if not times:
        raise SystemExit(f"{files[0]}: no epoch_loss events")
    return [times[step] for step in sorted(times)]


def replay(rule: type[train.TimeBudget], minutes: float, planned: int,
           durations: list[float]) -> tuple[int, float, list[str]]:
    """Epochs trained, seconds spent and the end's moves when ``rule`` meets ``durations`` (seconds)."""
    clock_times = itertools.accumulate(durations, initial=0.0)  # train begin, then each epoch's end
    moves: list[str] = []
    model, trained = Model(), 0
    budget = rule(minutes, 0.0, planned, None, (1, 0), lambda end: moves.append(f"to {end} after epoch {trained + 1}"),
                  clock=lambda: next(clock_times))
    budget.set_model(model)
    budget.on_train_begin()
    while trained < planned and not model.stop_training:
        budget.on_epoch_end(trained)
        trained += 1
    return trained, sum(durations[:trained]), moves


def main() -> None:
    """Read the run's epoch times, replay both rules, print where each ends."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run folder trained by one process, with its logs/")
    parser.add_argument("--budget", type=float, help="minutes (default: the run's time_budget)")
    parser.add_argument("--epochs", type=int, help="planned epochs (default: the epochs the run asked for)")
    args = parser.parse_args()
    record = runs.read_record(args.run)
    minutes = args.budget or record.settings.time_budget
    planned = args.epochs or record.settings.epochs
    if not minutes:
        raise SystemExit(f"{args.run}: no time_budget in its config; give --budget MINUTES")
    ends = epoch_end_times(args.run)
    # The budget counts from fit()'s start: the last recorded epoch ended progress.seconds after it.
    start = ends[-1] - record.progress.seconds
    recorded = [b - a for a, b in zip([start] + ends[:-1], ends)]
    extra = statistics.median(recorded[-3:])
    durations = recorded + [extra] * max(planned - len(recorded), 0)
    print(f"{args.run}: {len(recorded)} epochs recorded (the first {recorded[0]:.0f} s with set-up), "
          f"then {', '.join(f'{d:.0f}' for d in recorded[1:])} s; budget {minutes:g} min, {planned} planned")
    for name, rule in (("last epoch (before)", LastEpoch), ("median of the last three (now)", train.TimeBudget)):
        trained, seconds, moves = replay(rule, minutes, planned, durations)
        beyond = trained - len(recorded)
        note = f", {beyond} extrapolated at {extra:.0f} s" if beyond > 0 else ""
        print(f"{name}: {trained} epochs in {seconds / 60:.1f} min{note}; end moved "
              f"{'; '.join(moves) if moves else 'never'}")


if __name__ == "__main__":
    main()
