"""The model card of a trained run (``MODEL_CARD.md``): what it learned from, how well each attribute
works, what it is for and not for, and under which terms.

:func:`render_model_card` reads a run folder or an evidence folder (``docs/results/NAME``, written
by ``scripts/real_evidence.py``): both hold the run's record (config.json) and, once evaluated,
``eval_<split>.json`` and ``retrieval_<split>.json``. Every figure in the card is read from those
files; the card holds no image. ``python -m celebalib card`` is its command line.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd

from celebalib import __version__
from celebalib.attributes import ATTRIBUTES
from celebalib.errors import RunError
from celebalib.io import read_json, write_text
from celebalib.results import LABEL_RATES
from celebalib.bundles import RUN_SOURCES
from celebalib.runs import RunFiles, RunRecord, load_record, locate_run

SPLITS = ("val", "test")
WEAKEST = 5  # attributes the card names as the weakest

# Attributes a user must handle with care, and why: each is an annotator's judgement of appearance,
# or stands for a person's sex, age, body or skin colour, or for gendered grooming.
SENSITIVE: dict[str, str] = {
    "Attractive": "a judgement of beauty, the annotators' taste",
    "Male": "sex or gender as the annotators read it, in two classes only",
    "Young": "age as the annotators guessed it, with no stated cut-off",
    "Pale_Skin": "skin colour, close to ethnicity",
    "Chubby": "body weight, a judgement",
    "Double_Chin": "body weight, a judgement",
    "Big_Nose": "a judgement of a facial feature",
    "Big_Lips": "a judgement of a facial feature, close to ethnicity",
    "Narrow_Eyes": "a judgement of a facial feature, close to ethnicity",
    "Heavy_Makeup": "gendered grooming, a judgement",
    "Wearing_Lipstick": "gendered grooming",
    "Gray_Hair": "age",
    "Bald": "age and sex",
    "Receding_Hairline": "age and sex",
    "Oval_Face": "a judgement of face shape",
    "Pointy_Nose": "a judgement of a facial feature",
    "High_Cheekbones": "a judgement of a facial feature",
}
MARK = "†"
METRIC_WORDS = {"balanced_accuracy": "balanced accuracy", "auc": "ROC-AUC"}


@dataclasses.dataclass(frozen=True)
class CardSource:
    """What a model card is drawn from: the record and the reports a run or evidence folder holds."""

    folder: Path
    record: RunRecord
    evaluations: dict[str, dict[str, Any]]  # split -> eval_<split>.json
    retrievals: dict[str, dict[str, Any]]  # split -> retrieval_<split>.json
    label_rates: pd.DataFrame | None  # label_rates_train.csv: positives, images, positive_rate
    history: pd.DataFrame | None
    about: dict[str, Any] | None  # about.json: hardware and command, where given

    @property
    def name(self) -> str:
        """The run's name: its run id without the creation time."""
        return self.record.run_id.rsplit("-", 1)[0] if "-" in self.record.run_id else self.record.run_id

    @property
    def synthetic(self) -> bool | None:
        """Whether the run learned from celebalib's procedural faces (None: the record does not say)."""
        kind = data_kind(self.record)
        return None if kind is None else kind == "synthetic"


def read_source(folder: str | Path) -> CardSource:
    """Read a run or evidence folder's record and reports; RunError names a missing or broken file."""
    folder = Path(folder).expanduser()
    files = RunFiles(folder)
    if not folder.is_dir():
        raise RunError(f"{folder}: folder not found; expected a run folder (runs/NAME) or an evidence folder "
                       "(docs/results/NAME)")
    if not files.config.is_file():
        raise RunError(f"{files.config}: not found; expected a run folder written by celebalib train or an "
                       "evidence folder written by scripts/real_evidence.py")
    record = load_record(files.config)
    found = {split: (read_json(files.evaluation(split)), read_json(files.retrieval(split))) for split in SPLITS}
    for split, (report, _) in found.items():
        missing = [key for key in ("n_images", "means", "per_attribute") if report is not None and key not in report]
        if missing:
            raise RunError(f"{files.evaluation(split)}: no {', '.join(missing)}; expected the report "
                           "celebalib evaluate writes")
    return CardSource(folder, record, {s: e for s, (e, _) in found.items() if e is not None},
                      {s: r for s, (_, r) in found.items() if r is not None},
                      _read_table(folder / LABEL_RATES, ("attribute", "images", "positive_rate"), "attribute"),
                      _read_table(files.history, ("epoch",)), read_json(files.about()))


def _read_table(path: Path, columns: tuple[str, ...], index: str | None = None) -> pd.DataFrame | None:
    """A CSV file with ``columns``, or None where it is absent; RunError where it cannot be read so."""
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise RunError(f"{path}: not a readable CSV table ({str(error).splitlines()[0]})") from None
    missing = [name for name in columns if name not in table.columns]
    if missing:
        raise RunError(f"{path}: no column {', '.join(missing)}; expected the file celebalib writes")
    return table.set_index(index) if index else table


def data_kind(record: RunRecord) -> str | None:
    """"synthetic" or "celeba": as recorded, else from the data folder (``recipes.is_synthetic`` where it
    exists here, else its name, as the synthetic set's folders are named ``synthetic-N``)."""
    if record.facts.data_kind:
        return record.facts.data_kind
    root = record.facts.data_root
    if not root:
        return None
    from celebalib.recipes import is_synthetic

    if Path(root).expanduser().is_dir():
        return "synthetic" if is_synthetic(root) else "celeba"
    return "synthetic" if Path(root).name.startswith("synthetic") else "celeba"


def render_model_card(folder: str | Path) -> str:
    """MODEL_CARD.md of a run folder or an evidence folder, as Markdown."""
    source = read_source(folder)
    sections = [_header(source), _data(source), _recipe(source), _performance(source), _use(source),
                _sensitive(source), _failures(source), _licence(source), _provenance(source)]
    return "\n\n".join(section.strip("\n") for section in sections) + "\n"


def write_model_card(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the card of ``folder`` to ``out`` (default: ``MODEL_CARD.md`` in the folder), atomically."""
    text = render_model_card(folder)
    target = Path(out) if out is not None else RunFiles(Path(folder).expanduser()).model_card
    write_text(target, text)
    return target


# ---------------------------------------------------------------------------------------
# Sections


def _f(value: Any) -> str:
    """A figure as the card shows it: three decimals, or "-" where there is none."""
    return "-" if value is None else f"{float(value):.3f}"


def _pct(rate: float) -> str:
    """A rate as a percentage with one decimal."""
    return f"{100 * float(rate):.1f}%"


def _header(source: CardSource) -> str:
    """Title and the one paragraph a hurried reader needs."""
    settings, kind = source.record.settings, source.synthetic
    data = {True: "celebalib's procedural faces (drawings, not photographs)", False: "genuine CelebA photos",
            None: "data the record does not name"}[kind]
    lines = [f"# Model card: {source.name}", "",
             f"Run `{source.record.run_id}`. A MobileNetV2 network (width {settings.alpha}, "
             f"{_weights(settings.weights)}) that reads one aligned face and gives 40 probabilities, one per "
             f"CelebA attribute (hair colour, eyeglasses, smiling, ...); an attribute is answered yes where its "
             f"probability reaches the run's threshold for it. Trained on {data}."]
    if kind:
        lines += ["", "**This model was trained on procedural faces drawn by celebalib, not on photographs of "
                      "people. It is fit only for the course, to learn how such a model is built and measured; "
                      "its figures say how well it reads those drawings and nothing about real faces.**"]
    headline = _headline(source)
    if headline:
        lines += ["", headline]
    lines += ["", "For teaching and research only; not for judging, screening or identifying people."
                  + (" Trained on CelebA, so bound by CelebA's non-commercial research licence."
                     if kind is False else "")]
    return "\n".join(lines)


def _weights(weights: str | None) -> str:
    """Words for the ``weights`` setting."""
    return "trained from scratch" if weights is None else (
        "starting from ImageNet weights" if weights == "imagenet" else "starting from a local weights file")


def _headline(source: CardSource) -> str | None:
    """One sentence of mean figures on the last evaluated split (test before val)."""
    split = next((s for s in reversed(SPLITS) if s in source.evaluations), None)
    if split is None:
        return None
    report = source.evaluations[split]
    means = report["means"]["tuned"]
    return (f"On the {split} split ({report['n_images']:,} images), averaged over the 40 attributes at the run's "
            f"tuned thresholds: accuracy {_f(means['accuracy'])} (always answering the majority label: "
            f"{_f(means['baseline'])}), balanced accuracy {_f(means['balanced_accuracy'])} (the majority label: "
            f"0.500), ROC-AUC {_f(means['roc_auc'])}.")


def _data(source: CardSource) -> str:
    """What the run learned from: which data, which splits, how many images."""
    record, kind = source.record, source.synthetic
    lines = ["## Training data", ""]
    folder = Path(record.facts.data_root).name if record.facts.data_root else None
    if kind:
        lines.append(f"celebalib's synthetic faces (data folder `{folder}`): drawings in CelebA's file format whose "
                     "labels follow CelebA's attribute rates and co-occurrences, drawn by `python -m celebalib "
                     "synth`. No photograph of any person was used.")
    elif kind is False:
        lines.append(f"Genuine CelebA (data folder `{folder}`): aligned and cropped photos of celebrities, each "
                     "labelled once with the 40 attributes by a labelling company, split by CelebA's official "
                     "partition (`list_eval_partition.txt`), which keeps each person in one split.")
    else:
        lines.append("The record does not say which data the run learned from.")
    lines += ["", *(f"- {line}" for line in _image_counts(source))]
    return "\n".join(lines)


def _image_counts(source: CardSource) -> list[str]:
    """Lines of the images each split gave, as the record and reports recorded them."""
    record, settings = source.record, source.record.settings
    images = record.facts.images or {}
    lines = []
    train = images.get("train")
    if train is None and source.label_rates is not None:
        annotated = int(source.label_rates["images"].iloc[0])
        drawn = f"; each epoch drew {settings.epoch_images:,} images" if settings.epoch_images else ""
        lines.append(f"Train split: {annotated:,} images annotated (the record, older than that count, does not "
                     f"say how many of them the data folder held){drawn}.")
    elif train is None and images.get("val") is None:
        lines.append("The record does not give the train and val splits' image counts (a run from before "
                     "celebalib kept them).")
    if train is not None:
        if not settings.epoch_images:
            drawn = "; each epoch went through all of them"
        elif settings.epoch_images < train:
            drawn = f"; each epoch drew {settings.epoch_images:,} of them at random"
        else:
            drawn = f"; each epoch went through them (the recipe's {settings.epoch_images:,} images per epoch)"
        lines.append(f"Train split: {train:,} images{drawn}.")
    if images.get("val") is not None:
        lines.append(f"Val split, scored after each epoch to keep the best: {images['val']:,} images.")
    elif settings.val_images:
        lines.append(f"Val split, scored after each epoch to keep the best: at most {settings.val_images:,} images.")
    for split, report in source.evaluations.items():
        lines.append(f"Evaluated on the {split} split: {report['n_images']:,} images (the figures below).")
    if not source.evaluations:
        lines.append("Not evaluated yet: `python -m celebalib evaluate --run RUN --split val` writes the figures.")
    return lines


def _recipe(source: CardSource) -> str:
    """The recipe: the named recipe it matches or differs from, training facts, and every setting."""
    record = source.record
    settings, progress = record.settings, record.progress
    epochs = progress.epochs_done or (len(source.history) if source.history is not None else 0)
    ended = " (the time budget ended training)" if progress.budget_end else ""
    averaged = (f", averaged over epochs {progress.averaged['epochs'][0]}-{progress.averaged['epochs'][1]}"
                if progress.averaged else "")
    rate = record.learning_rate_used
    lines = ["## Recipe", "", f"- {_closest_recipe(settings)}",
             f"- Epochs trained: {epochs} of {settings.epochs} asked for{ended}.",
             f"- Learning rate used: {rate} ({settings.optimizer}, {settings.lr_schedule} schedule).",
             f"- Kept model: the epoch with the best val mean {METRIC_WORDS[settings.checkpoint_metric]}{averaged}."]
    if progress.seconds:
        lines.append(f"- Training time: {progress.seconds / 60:.1f} minutes.")
    if record.thresholds:
        objective = METRIC_WORDS.get(record.thresholds.objective, record.thresholds.objective.replace("_", " "))
        lines.append(f"- Thresholds: one per attribute, tuned on val for {objective}.")
    if record.facts.versions:
        lines.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in record.facts.versions.items()) + ".")
    lines += ["", "| setting | value | meaning |", "| --- | --- | --- |"]
    for field in dataclasses.fields(settings):
        lines.append(f"| `{field.name}` | {getattr(settings, field.name)} | {field.metadata.get('help', '')} |")
    return "\n".join(lines)


def _closest_recipe(settings: Any) -> str:
    """Which named recipe the settings are, or the one they differ least from and how."""
    from celebalib.recipes import RECIPES

    def changes(name: str) -> dict[str, Any]:
        base = RECIPES[name]
        return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)
                if getattr(settings, f.name) != getattr(base, f.name)
                and not (f.name == "learning_rate" and settings.learning_rate_used == base.learning_rate_used)}

    name = min(RECIPES, key=lambda recipe: len(changes(recipe)))
    differ = changes(name)
    if not differ:
        return f"The `{name}` recipe, unchanged."
    return f"The `{name}` recipe with " + ", ".join(f"`{k}={v}`" for k, v in differ.items()) + "."


def _performance(source: CardSource) -> str:
    """Mean and per-attribute figures of each evaluated split, and retrieval where measured."""
    lines = ["## How well it works", ""]
    if not source.evaluations:
        return "\n".join(lines + ["No evaluation is recorded: the card has no figures yet."])
    lines += ["Accuracy alone flatters a model on CelebA: most attributes are rare, so always answering the "
              "majority label already scores well (the \"majority baseline\"). Balanced accuracy (the mean of "
              "the rates of yes and no answered right; 0.500 for the baseline) and ROC-AUC (1.000 perfect, "
              f"0.500 chance) stand beside it. Attributes marked {MARK} need care (see below)."]
    for split, report in source.evaluations.items():
        lines += ["", f"### {split} split: {report['n_images']:,} images", "",
                  f"Thresholds: {report.get('thresholds_source', 'as recorded')}.", "",
                  "| mean over the 40 attributes | accuracy | majority baseline | balanced accuracy | ROC-AUC |",
                  "| --- | --- | --- | --- | --- |"]
        for block, label in (("at_0.5", "at threshold 0.5"), ("tuned", "at the tuned thresholds")):
            means = report["means"].get(block)
            if means:
                lines.append(f"| {label} | {_f(means['accuracy'])} | {_f(means['baseline'])} | "
                             f"{_f(means['balanced_accuracy'])} | {_f(means['roc_auc'])} |")
        lines += ["", *_weakest(report), "", *_attribute_table(report)]
        if split in source.retrievals:
            lines += ["", _retrieval(source.retrievals[split])]
    return "\n".join(lines)


def _block(row: dict[str, Any]) -> dict[str, Any]:
    """An attribute's figures at the thresholds the run uses: tuned where the report has them, else 0.5."""
    return row.get("tuned") or row["at_0.5"]


def _weakest(report: dict[str, Any]) -> list[str]:
    """A sentence naming the attributes with the lowest and highest balanced accuracy."""
    rows = sorted(report["per_attribute"], key=lambda row: _block(row)["balanced_accuracy"])
    worst = ", ".join(f"{row['attribute']} {_f(_block(row)['balanced_accuracy'])}" for row in rows[:WEAKEST])
    best = ", ".join(f"{row['attribute']} {_f(_block(row)['balanced_accuracy'])}" for row in rows[::-1][:WEAKEST])
    return [f"Weakest by balanced accuracy: {worst}. Strongest: {best}."]


def _attribute_table(report: dict[str, Any]) -> list[str]:
    """One row per attribute: positive rate, baseline, ROC-AUC, and accuracy, balanced accuracy and
    threshold at the thresholds the run uses."""
    lines = ["| attribute | labelled yes in this split | majority baseline | ROC-AUC | accuracy | balanced accuracy "
             "| threshold |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in report["per_attribute"]:
        block, name = _block(row), row["attribute"]
        shown = f"{name} {MARK}" if name in SENSITIVE else name
        lines.append(f"| {shown} | {_pct(row['positive_rate'])} | {_f(row['baseline'])} | {_f(row.get('roc_auc'))} "
                     f"| {_f(block['accuracy'])} | {_f(block['balanced_accuracy'])} | {_f(block['threshold'])} |")
    return lines


def _retrieval(report: dict[str, Any]) -> str:
    """A sentence on retrieval: precision@k of the predicted ranking against true labels and chance."""
    rankings = {row["ranking"]: row for row in report["rankings"]}
    predicted = rankings.get("predicted")
    if predicted is None:
        return ""
    k, hamming = predicted["k"], predicted["max_hamming"]
    others = "; ".join(f"{name}: {_f(row['precision_at_k'])}" for name, row in rankings.items() if name != "predicted")
    return (f"Retrieval ({predicted['queries']:,} queries, gallery of {predicted['gallery']:,} faces): among the {k} "
            f"faces closest in predicted attributes, a share of {_f(predicted['precision_at_k'])} have true labels "
            f"within {hamming} of the query's 40 ({others}).")


def _use(source: CardSource) -> str:
    """Intended uses and uses the model is not fit for."""
    if source.synthetic:
        uses = ["- Learning, in celebalib's course, how a multi-label model is trained, evaluated, explained and "
                "used for retrieval, on the synthetic faces it was trained on.",
                "- Nothing else: on photographs of people its answers mean nothing."]
    else:
        uses = ["- Teaching and research on face-attribute models: what they learn, where they fail, how to "
                "measure them.",
                "- Describing faces in photos for study, reading each answer with its attribute's figures above.",
                "- Finding faces that share attributes in a research collection (celebalib's retrieval and app)."]
    subject = "a drawing's rules" if source.synthetic else "a celebrity photo"
    return "\n".join([
        "## Intended use", "", *uses,
        "", "## Not fit for", "",
        "- **Judging, screening or identifying people**: hiring, admission, dating, security, policing, border "
        "control, credit, insurance, or any decision about a person. The model does not recognise who someone "
        f"is, and its answers are guesses at what annotators would have said about {subject}.",
        "- Inferring a person's sex, gender, age, ethnicity, health or worth from the attributes below.",
        "- Any commercial use (see the licence).",
        "- Photos of children: CelebA's celebrities are almost all adults."])


def _train_rates(source: CardSource) -> dict[str, float]:
    """Each attribute's positive rate over the train split: as recorded, else label_rates_train.csv's."""
    if source.record.facts.train_label_rates:
        return dict(source.record.facts.train_label_rates)
    return {} if source.label_rates is None else source.label_rates["positive_rate"].to_dict()


def _sensitive(source: CardSource) -> str:
    """The subjective and sensitive attributes, with CelebA's label noise."""
    rates = _train_rates(source)
    lines = ["## Attributes that need care", "",
             "Several labels are opinions or stand for a sensitive trait. Treat their answers as what CelebA's "
             "annotators might have said about a celebrity photo, never as a fact about a person.", "",
             "| attribute | why | labelled yes in the train split |", "| --- | --- | --- |"]
    for name, why in SENSITIVE.items():
        lines.append(f"| {name} | {why} | {_pct(rates[name]) if name in rates else '-'} |")
    if source.synthetic:
        lines += ["", "The synthetic faces carry these labels too, drawn by rules that follow CelebA's label rates "
                      "(Attractive changes nothing in a drawing): a model that learned them learned nothing about "
                      "people."]
    lines += ["", "CelebA's labels are noisy. Each photo was labelled once, by a labelling company that published no "
              "guidelines or agreement figures. When Wu et al. had two annotators relabel CelebA photos, most "
              "attributes fell short of near-perfect agreement, and High_Cheekbones, Pointy_Nose and Oval_Face were "
              "labelled about as consistently as chance (\"Consistency and Accuracy of CelebA Attribute Values\", "
              "CVPR Workshops 2023, arXiv:2210.07356). The same person's photos also often disagree on what cannot "
              "change between them (docs/experiments/label-agreement.md in celebalib). A model trained on these "
              "labels learns the annotators' habits, and its figures are measured against the same noisy labels."]
    return "\n".join(lines)


def _failures(source: CardSource) -> str:
    """Known failure modes: alignment, pose, photos unlike CelebA's, rare attributes."""
    settings = source.record.settings
    from celebalib.data import image_shape

    height, width = image_shape(settings.image_size, settings.crop)
    rates = _train_rates(source)
    rare = sorted((rate, name) for name, rate in rates.items())[:WEAKEST]
    lines = ["## Known failure modes", "",
             f"- **Unaligned faces.** The model saw only CelebA's aligned crops (eyes and mouth at fixed places), "
             f"at {width}x{height} pixels. A photo must go through the same detection and alignment "
             "(`python -m celebalib predict` does it, with MTCNN); a centre crop, a missed or wrong detection, "
             "or a face the detector aligns badly gives wrong answers with high confidence.",
             "- **Non-frontal, small, blurred or covered faces**: profiles, tilted heads, faces behind hands, "
             "masks or hair, strong shadows.",
             *(["- **Any photograph at all**: this run saw only drawings, so on photos its answers are close "
                "to guesses."] if source.synthetic else []),
             "- **Photos unlike CelebA's**: CelebA holds mostly young, light-skinned celebrities, often "
             "professionally lit and made up. Everyday phone photos, other age groups and skin tones, children, "
             "drawings and paintings lie outside what the model saw (a domain shift), and its figures above do "
             "not hold for them."]
    if rare:
        lines.append("- **Rare attributes** are learned from few examples and scored on few: "
                     + ", ".join(f"{name} ({_pct(rate)} of train images)" for rate, name in rare) + ".")
    return "\n".join(lines)


def _licence(source: CardSource) -> str:
    """CelebA's licence and how it binds the model."""
    if source.synthetic:
        terms = ("The training images were drawn by celebalib (MIT licence), and no CelebA image was used. Their "
                 "label statistics were derived from CelebA's annotation file, which CelebA's agreement allows for "
                 "non-commercial research only; to be safe, use this model under the same terms.")
    else:
        terms = ("CelebA's release agreement allows its images, its labels and data derived from them to be used "
                 "for non-commercial research purposes only, and forbids redistributing the images. This model "
                 "was trained on CelebA, so it is data derived from it: the same terms bind the model, its "
                 "weights, its exports (ONNX, bundles) and its outputs. Anyone you give it to is bound too.")
    return "\n".join(["## Licence", "", terms, "",
                      "celebalib's code is MIT-licensed; that licence does not extend to CelebA or to models "
                      "trained on it."])


def _provenance(source: CardSource) -> str:
    """Where the card's figures come from, and how to regenerate it."""
    files = RunFiles(source.folder)
    used = [files.config.name, *(files.evaluation(s).name for s in source.evaluations),
            *(files.retrieval(s).name for s in source.retrievals)]
    if source.label_rates is not None:
        used.append(LABEL_RATES)
    lines = ["## About this card", "",
             f"Generated by celebalib {__version__} from the run's files: " + ", ".join(f"`{n}`" for n in used)
             + ". Every figure above is read from them. Regenerate with `python -m celebalib card --run FOLDER`."]
    about = source.about or {}
    if about.get("hardware"):
        lines += ["", f"Trained on: {about['hardware']}."]
    if about.get("command"):
        lines += ["", "Reproduce with:", "", "```sh", *about["command"].split("; "), "```"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Command line: ``celebalib card``
# ---------------------------------------------------------------------------------------

EXAMPLE = """example:
  python -m celebalib card --run runs/celeba-cpu
  python -m celebalib card --run docs/results/opt-adadelta --out opt-adadelta-card.md

Every figure in the card is read from the folder's config.json, eval_<split>.json and
retrieval_<split>.json (run `celebalib evaluate` first for the per-attribute figures)."""


def configure_card_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``celebalib card``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLE
    parser.description = ("Write a trained run's model card (MODEL_CARD.md): its data, recipe and per-attribute\n"
                          "figures, what it is fit for and not, its sensitive attributes, failure modes and licence.")
    parser.add_argument("--run", required=True, help=f"{RUN_SOURCES}, or an evidence folder (docs/results/NAME)")
    parser.add_argument("--out", default=None, help="file to write (default: MODEL_CARD.md in the --run folder); "
                                                    "- prints it")
    parser.set_defaults(handler=_card_command)


def _card_command(args: argparse.Namespace) -> int:
    """Render the card, then print or write it."""
    folder = locate_run(args.run)
    if args.out == "-":
        print(render_model_card(folder), end="")
        return 0
    if args.out is not None and Path(args.out).is_dir():
        raise RunError(f"{args.out}: is a folder; expected a file name to write, e.g. "
                       f"{Path(args.out) / 'MODEL_CARD.md'}")
    path = write_model_card(folder, args.out)
    print(f"wrote {path}")
    return 0
