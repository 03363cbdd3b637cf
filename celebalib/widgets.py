"""An interactive retrieval explorer for notebooks and Voila apps.

:class:`RetrievalExplorer` keeps the query logic in plain methods (``query_by_id``,
``query_random``, ``query_by_upload``, ``query_by_attributes``, ``set_k``) that update
``results`` and ``status``; the ipywidgets controls only call them and redraw, so the
logic is testable without a browser.
"""

from __future__ import annotations

import functools
import html
import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from celebalib.errors import CelebalibError, ConfigError
from celebalib.faces import ALIGNED, MAX_PIXELS

if TYPE_CHECKING:
    from celebalib.retrieval import GalleryIndex
    from celebalib.runs import Run

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# Decoding is what costs memory, so a small file that unpacks to a huge image is refused too
# (the same limit as every photo read by ``faces.read_photo``).
MAX_UPLOAD_PIXELS = MAX_PIXELS
UPLOAD_FORMATS = ("JPEG", "PNG")
ANY, YES, NO = "any", "yes", "no"
_ATTRIBUTE_STATES = {YES: 1, NO: 0}


@functools.lru_cache(maxsize=512)
def _thumbnail_file(path: str, size: int) -> bytes:
    """Return a small JPEG of the image at ``path`` (cached, as results repeat)."""
    return thumbnail_bytes(Path(path).read_bytes(), size)


def thumbnail_bytes(content: bytes, size: int) -> bytes:
    """Shrink an encoded image to fit in ``size`` x ``size`` pixels; return JPEG bytes."""
    with Image.open(io.BytesIO(content)) as image:
        image.draft("RGB", (size, size))  # JPEGs decode straight at a reduced scale: much faster
        small = image.convert("RGB")
        small.thumbnail((size, size))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _placeholder(size: int) -> bytes:
    """Return a grey square JPEG shown where a gallery file cannot be read."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 200, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


def check_upload(content: bytes, name: str, *, max_bytes: int = MAX_UPLOAD_BYTES) -> str | None:
    """Return why an uploaded file cannot be used as a query, or None when it can."""
    if len(content) > max_bytes:
        return f"{name} is {_size_text(len(content))}; the limit is {_size_text(max_bytes)}."
    if not content:
        return f"{name} is empty; expected a JPEG or PNG photo."
    try:
        with Image.open(io.BytesIO(content)) as image:
            kind, (width, height) = image.format, image.size
            image.verify()  # the file's structure (a PNG's checksums), but no JPEG pixel data
        if kind in UPLOAD_FORMATS and width * height <= MAX_UPLOAD_PIXELS:
            with Image.open(io.BytesIO(content)) as image:
                image.load()  # decodes every pixel, so a truncated JPEG is refused here, not later
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return f"{name} is not a readable image; expected a JPEG or PNG photo."
    if kind not in UPLOAD_FORMATS:
        return f"{name} is a {kind} image; expected a JPEG or PNG photo."
    if width * height > MAX_UPLOAD_PIXELS:
        return f"{name} is {width}x{height} pixels; the limit is {MAX_UPLOAD_PIXELS // 10**6} megapixels."
    return None


def _size_text(n_bytes: int) -> str:
    """Say a file size for people: 900 bytes, 12.5 KB, 10 MB."""
    for unit, scale in (("MB", 2**20), ("KB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{n_bytes} bytes"


def describe_attributes(wanted: Mapping[str, int]) -> str:
    """Say an attribute query in words, e.g. ``Eyeglasses, Smiling, not Male``."""
    return ", ".join(name if value else f"not {name}" for name, value in wanted.items())


def _differs_text(differs: Any, limit: int = 4) -> str:
    """Shorten the attributes that differ from the query to a few names."""
    if differs is None or (isinstance(differs, float) and np.isnan(differs)):
        return ""
    names = [part.strip() for part in differs.split(",")] if isinstance(differs, str) else list(differs)
    names = [name for name in names if name]
    if not names:
        return "same attributes"
    shown = ", ".join(names[:limit])
    return shown + (f" +{len(names) - limit} more" if len(names) > limit else "")


def result_caption(row: Mapping[str, Any]) -> str:
    """Return the HTML caption of one result: rank, image id, distance and what differs."""
    differs = _differs_text(row.get("differs"))
    return (
        f'<div style="font-size:11px;line-height:1.3"><b>#{int(row["rank"])}</b> {_escape(row["image_id"])}'
        f'<br>d = {float(row["distance"]):.3f}<br><span style="color:#666">{_escape(differs)}</span></div>'
    )


class RetrievalExplorer:
    """Pick a query (gallery image, uploaded photo or attributes) and see the closest faces.

    The ``query_*`` methods and :meth:`set_k` return the new ``results`` DataFrame (columns
    ``rank``, ``image_id``, ``path``, ``distance``, ``differs``). When the input cannot be
    used they leave ``results`` unchanged, put the reason in ``status`` (also shown in the
    widget) and return None, so a bad upload never raises inside a notebook.
    Show the widget with ``display(explorer)`` or ``explorer.widget``.

    Args:
        index: the gallery to search.
        run: the run that built the index; needed only to query with an uploaded photo.
        k: how many results to show at first (the slider changes it).
        thumbnail_size: longest side of the result thumbnails, in pixels.
        max_choices: how many gallery ids the dropdown lists (the Random button draws
            from the whole gallery).
        max_upload_bytes: larger uploads are refused with a message.
        seed: seed of the Random button.
        align: find the uploaded photo's largest face and align it onto CelebA's template
            (``celebalib.faces``); False centre-crops the whole photo, for aligned images.
    """

    def __init__(
        self,
        index: GalleryIndex,
        run: Run | None = None,
        *,
        k: int = 8,
        thumbnail_size: int = 96,
        max_choices: int = 1000,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        seed: int = 0,
        align: bool = True,
    ) -> None:
        self.index = index
        self.run = run
        self.k = _check_k(k, len(index.image_ids))
        self.thumbnail_size = int(thumbnail_size)
        self.max_upload_bytes = int(max_upload_bytes)
        self.align = bool(align)
        self.results = pd.DataFrame(columns=["rank", "image_id", "path", "distance", "differs"])
        self.status = ""
        self.error = False
        self.query_label = ""
        self.query_thumbnail: bytes | None = None
        self._rng = np.random.default_rng(seed)
        self._last_query: Callable[[int], pd.DataFrame] | None = None
        # Set while code (not the user) changes a control, so its observer does not query.
        self._quiet = False
        self._pickers: dict[str, widgets.Dropdown] | None = None
        self._build_controls(max_choices)
        self.widget = self._build_layout()
        if len(index.image_ids):
            self.query_by_id(str(index.image_ids[0]))

    # Query logic: plain methods, no drawing beyond the final refresh.

    def query_by_id(self, image_id: str) -> pd.DataFrame | None:
        """Query with the predicted vector of a gallery image."""
        path = self._gallery_path(image_id)
        if path is None:
            return self._fail(f"{image_id} is not in the gallery.")
        self._sync(self.image_picker, image_id if image_id in self.image_picker.options else None)
        return self._run(lambda k: self.index.query_id(image_id, k=k), image_id, self._thumbnail_of(path))

    def query_random(self) -> pd.DataFrame | None:
        """Query with a gallery image drawn at random."""
        ids = self.index.image_ids
        return self.query_by_id(str(ids[int(self._rng.integers(len(ids)))]))

    def query_by_upload(self, content: bytes, name: str = "upload") -> pd.DataFrame | None:
        """Query with an uploaded photo's largest face, aligned onto CelebA's template, then cropped and
        resized as in training (needs a run); the preview shows what the model saw."""
        from celebalib.predict import png_bytes, prepare_photo

        problem = check_upload(content, name, max_bytes=self.max_upload_bytes)
        if problem is None and self.run is None:
            problem = "Uploading a photo needs a trained run: RetrievalExplorer(index, run=open_run(...))."
        if problem is not None:
            return self._fail(problem)
        # The first upload loads TensorFlow, the face detector and the model (seconds): say so meanwhile.
        self.status, self.error = f"Finding the face in {name} and predicting its attributes...", False
        self._draw_status()
        try:
            prepared = prepare_photo(self.run, bytes(content), align=self.align)
        except CelebalibError as error:
            return self._fail(f"{name}: {error}")
        if not prepared:
            return self._fail(f"No face found in {name}; expected a photo with a face "
                              "(RetrievalExplorer(..., align=False) searches with the whole photo).")
        face = prepared[0]
        thumbnail = thumbnail_bytes(png_bytes(face.pixels), self.thumbnail_size)
        results = self._run(lambda k: self.index.query_image(self.run, face.pixels, k=k), name, thumbnail,
                            from_gallery=False)
        if results is not None and face.how == ALIGNED:
            which = "its face" if len(prepared) == 1 else f"its largest face of {len(prepared)}"
            self.status += f" The query is {which}, aligned onto CelebA's template (shown as the model saw it)."
            self._draw_status()
        return results

    def query_by_attributes(self, wanted: Mapping[str, int]) -> pd.DataFrame | None:
        """Query with an attribute description such as ``{"Eyeglasses": 1, "Male": 0}``."""
        if not wanted:
            return self._fail("Choose yes or no for at least one attribute.")
        for name, value in wanted.items():
            if name not in self.index.attributes:
                return self._fail(f"Unknown attribute {name!r}; expected one of the index's attribute names.")
            if value not in (0, 1):
                return self._fail(f"Attribute {name!r} = {value!r}; expected 1 (yes) or 0 (no).")
        wanted = {name: int(value) for name, value in wanted.items()}
        self._quiet = True
        try:
            for name, picker in self.attribute_pickers.items():
                picker.value = {1: YES, 0: NO}.get(wanted.get(name, -1), ANY)
        finally:
            self._quiet = False
        return self._run(
            lambda k: self.index.query_attributes(wanted, k=k), describe_attributes(wanted), None, from_gallery=False
        )

    def selected_attributes(self) -> dict[str, int]:
        """Return the attributes set to yes (1) or no (0) in the attribute pickers."""
        return {
            name: _ATTRIBUTE_STATES[picker.value]
            for name, picker in (self._pickers or {}).items() if picker.value in _ATTRIBUTE_STATES
        }

    def set_k(self, k: int) -> pd.DataFrame | None:
        """Change how many results are shown and repeat the last query."""
        try:
            self.k = _check_k(k, len(self.index.image_ids))
        except CelebalibError as error:
            return self._fail(str(error))
        self._sync(self.k_slider, self.k)
        if self._last_query is None:
            return None
        return self._run(self._last_query, self.query_label, self.query_thumbnail)

    def _run(self, query: Callable[[int], pd.DataFrame], label: str, thumbnail: bytes | None, *,
             from_gallery: bool = True) -> pd.DataFrame | None:
        """Run a query; on success keep it (for k changes) and redraw, else show why."""
        try:
            results = query(self.k)
        except CelebalibError as error:
            return self._fail(str(error))
        if not from_gallery:
            # The dropdown names the query only while it is a gallery image.
            self._sync(self.image_picker, None)
        self.results = results.reset_index(drop=True)
        self._last_query, self.query_label, self.query_thumbnail = query, label, thumbnail
        self.status, self.error = f"The {len(self.results)} closest faces to {label}.", False
        self._draw()
        return self.results

    def _fail(self, message: str) -> None:
        """Show a message in the widget and keep the current results."""
        self.status, self.error = message, True
        self._draw_status()
        return None

    def _gallery_path(self, image_id: str) -> str | None:
        """Return the file of a gallery image, or None when the id is unknown."""
        where = np.flatnonzero(np.asarray(self.index.image_ids) == image_id)
        return str(self.index.paths[where[0]]) if len(where) else None

    def _thumbnail_of(self, path: str) -> bytes:
        """Return the thumbnail of a gallery file, or a grey square where it cannot be read."""
        try:
            return _thumbnail_file(str(path), self.thumbnail_size)
        except (OSError, UnidentifiedImageError):
            return _placeholder(self.thumbnail_size)

    def _sync(self, control: widgets.ValueWidget, value: Any) -> None:
        """Set a control's value without triggering its query."""
        self._quiet = True
        try:
            if value is None and isinstance(control, widgets.Dropdown):
                control.index = None
            else:
                control.value = value
        finally:
            self._quiet = False

    # Drawing: the controls call the query methods above, then show their outcome.

    @property
    def attribute_pickers(self) -> dict[str, widgets.Dropdown]:
        """One any / yes / no picker per attribute, by name (created on first use)."""
        if self._pickers is None:
            layout = widgets.Layout(width="220px")  # one layout model for all 40
            self._pickers = {
                str(name): widgets.Dropdown(options=[ANY, YES, NO], value=ANY, description=str(name),
                                            style={"description_width": "140px"}, layout=layout)
                for name in self.index.attributes
            }
            for picker in self._pickers.values():
                picker.observe(self._on_attribute, names="value")
            self._picker_grid.children = tuple(self._pickers.values())
        return self._pickers

    def _build_controls(self, max_choices: int) -> None:
        """Create the controls and connect them to the query methods."""
        ids = [str(image_id) for image_id in self.index.image_ids[:max_choices]]
        self.image_picker = widgets.Dropdown(
            options=ids, description="Gallery image", style={"description_width": "initial"},
        )
        self.random_button = widgets.Button(description="Random", icon="random", tooltip="Query a random gallery image")
        self.upload = widgets.FileUpload(accept="image/jpeg,image/png", multiple=False, description="Upload photo")
        largest = min(max(48, self.k), len(self.index.image_ids))
        self.k_slider = widgets.IntSlider(value=self.k, min=1, max=largest, description="k")
        self.clear_button = widgets.Button(description="All to any", tooltip="Reset every attribute to any")
        self.image_picker.add_class("celebalib-image-picker")
        self.image_picker.observe(self._on_pick, names="value")
        self.random_button.on_click(lambda _: self.query_random())
        self.upload.observe(self._on_upload, names="value")
        self.k_slider.observe(self._on_k, names="value")
        self.clear_button.on_click(self._on_clear)

    def _build_layout(self) -> widgets.VBox:
        """Arrange the controls, the query preview, the status line and the results grid."""
        self.query_preview = widgets.Image(format="jpeg", layout=widgets.Layout(width=f"{self.thumbnail_size}px"))
        self.query_caption = widgets.HTML()
        self.query_caption.add_class("celebalib-query-caption")
        self.status_html = widgets.HTML()
        self.grid = widgets.GridBox(layout=widgets.Layout(
            grid_template_columns=f"repeat(auto-fill, minmax({self.thumbnail_size + 60}px, 1fr))", grid_gap="8px",
        ))
        # The 40 pickers are drawn when the accordion first opens: a page that never queries by
        # attributes then costs the kernel and the browser a third of the widgets.
        self._picker_grid = widgets.GridBox(layout=widgets.Layout(grid_template_columns="repeat(auto-fill, 230px)"))
        accordion = widgets.Accordion([widgets.VBox([self.clear_button, self._picker_grid])], selected_index=None)
        accordion.set_title(0, "Query by attributes (any / yes / no)")
        accordion.observe(self._on_open, names="selected_index")
        controls = widgets.VBox([widgets.HBox([self.image_picker, self.random_button]), self.upload, self.k_slider])
        preview = widgets.VBox(
            [self.query_preview, self.query_caption],
            layout=widgets.Layout(width=f"{max(self.thumbnail_size, 120) + 40}px"),
        )
        root = widgets.VBox([widgets.HBox([preview, controls]), accordion, self.status_html, self.grid])
        root.add_class("celebalib-retrieval")
        return root

    def _draw(self) -> None:
        """Redraw the query preview, the status line and the results grid."""
        self.query_preview.value = self.query_thumbnail or b""
        self.query_preview.layout.display = None if self.query_thumbnail else "none"
        self.query_caption.value = f"<b>Query:</b> {_escape(self.query_label)}"
        self.grid.children = [self._card(row) for row in self.results.to_dict("records")]
        self._draw_status()

    def _draw_status(self) -> None:
        """Show the status line, in red when the last action failed."""
        colour = "#b00020" if self.error else "#333"
        self.status_html.value = f'<span style="color:{colour}">{_escape(self.status)}</span>'

    def _card(self, row: Mapping[str, Any]) -> widgets.VBox:
        """Draw one result: thumbnail and caption."""
        thumb = widgets.Image(value=self._thumbnail_of(row["path"]), format="jpeg")
        caption = widgets.HTML(result_caption(row))
        card = widgets.VBox([thumb, caption], layout=widgets.Layout(align_items="center"))
        card.add_class("celebalib-result")
        return card

    def _on_open(self, change: Mapping[str, Any]) -> None:
        """Draw the attribute pickers when the accordion opens."""
        if change["new"] is not None:
            self.attribute_pickers  # noqa: B018 (building them is the point)

    def _on_pick(self, change: Mapping[str, Any]) -> None:
        """Query the image chosen in the dropdown."""
        if not self._quiet and change["new"]:
            self.query_by_id(change["new"])

    def _on_upload(self, change: Mapping[str, Any]) -> None:
        """Query the uploaded file, then clear the upload so the same file can be sent again."""
        if self._quiet or not change["new"]:
            return
        upload = change["new"][-1]
        self.query_by_upload(bytes(upload["content"]), str(upload.get("name", "upload")))
        self._sync(self.upload, ())

    def _on_k(self, change: Mapping[str, Any]) -> None:
        """Repeat the last query with the new k."""
        if not self._quiet:
            self.set_k(change["new"])

    def _on_attribute(self, change: Mapping[str, Any]) -> None:
        """Query the attributes chosen so far."""
        if not self._quiet:
            self.query_by_attributes(self.selected_attributes())

    def _on_clear(self, _: widgets.Button) -> None:
        """Set every attribute picker back to any, without querying."""
        self._quiet = True
        try:
            for picker in (self._pickers or {}).values():
                picker.value = ANY
        finally:
            self._quiet = False

    def _ipython_display_(self) -> None:
        """Display the widget when the explorer is a cell's last expression."""
        from IPython.display import display

        display(self.widget)


def _check_k(k: int, gallery_size: int) -> int:
    """Return ``k`` as an int, or raise ConfigError when it is not in 1..gallery size."""
    if int(k) != k or not 1 <= k <= max(gallery_size, 1):
        raise ConfigError(f"k={k!r}: expected a whole number from 1 to the gallery size ({gallery_size})")
    return int(k)


def _escape(text: str) -> str:
    """Escape text for an HTML widget."""
    return html.escape(str(text))
