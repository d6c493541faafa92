"""The base of every panel: a titled, focusable box that draws its part of the current view."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.reactive import reactive
from textual.widget import Widget

from .view import ViewData


class Panel(Widget):
    """Subclasses implement `content(view)`; colours come from component classes in the .tcss.

    A new view redraws the panel only when its text (characters or styles) changed:
    a redraw costs Textual far more than building the text, and most views change
    only a few panels.
    """

    can_focus = True
    ALLOW_MAXIMIZE = True
    TITLE = ""
    SLOW = True  # redraw only for full views (about once a second): charts, medians, rates
    COMPONENT_CLASSES = {"panel--dim", "panel--em", "panel--good", "panel--warn", "panel--bad"}

    view: reactive[ViewData | None] = reactive(None, repaint=False)  # compared by identity

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = self.TITLE
        self._text: Text | None = None
        self._text_size: Size | None = None
        self._styles: dict[str, Style] = {}

    def watch_view(self, view: ViewData | None) -> None:
        if view is not None:
            self.set_title(self.title(view))
            self.redraw()

    def set_title(self, title: str) -> None:
        if title != self.border_title:  # setting it repaints, even to the same text
            self.border_title = title

    def redraw(self) -> None:
        """Rebuild the text now and repaint only if it differs from what is on screen."""
        if self.view is None or not self.is_mounted:
            return
        text = self.content(self.view)
        if text != self._text or self._text_size != self.size:
            self._text, self._text_size = text, self.size
            self.refresh()

    def title(self, view: ViewData) -> str:
        return self.TITLE

    def render(self) -> Text:
        if self.view is None:
            return Text("waiting for the run", style=self.style("panel--dim"))
        if self._text is None or self._text_size != self.size:  # resized since
            self._text, self._text_size = self.content(self.view), self.size
        return self._text

    def content(self, view: ViewData) -> Text:
        raise NotImplementedError

    def style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = self.get_component_rich_style(name, partial=True)
        return style

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()  # a new theme or stylesheet: colours are looked up again
        self._text = None

    @property
    def plain(self) -> bool:
        """NO_COLOR: draw with distinct characters instead of colours."""
        return self.app.no_color
