"""`ares review`: a Textual app that walks student rationales one at a time.

Keys: up/down pick a sentence; 0-9 set its score to 0.0-0.9 and t to 1.0; a accepts the score
shown; e edits the correction (ctrl+s saves, escape cancels); f flags the question as bad (again
to unflag); n/p next and previous rationale; q quits. Every change is written at once as a
`human_label` row through `labels`; the screen is then redrawn from the store.
"""

from __future__ import annotations

import difflib

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static, TextArea

from ..formatting import letter
from ..store import Store
from .labels import HUMAN, ReviewItem, flag_question, record_correction, record_score, review_items


def correction_diff(original: str, corrected: str) -> Text:
    """Word-level diff: removed words struck through in red, added words in green."""
    a, b = original.split(), corrected.split()
    out = Text()
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            out.append(" ".join(a[i1:i2]) + " ", style="strike red")
        if op in ("insert", "replace"):
            out.append(" ".join(b[j1:j2]) + " ", style="bold green")
        if op == "equal":
            out.append(" ".join(a[i1:i2]) + " ")
    return out


def _fmt(score: float | None) -> str:
    return "" if score is None else f"{score:.1f}"


SCORE_WIDTH = 12  # a labeller's column: its score, under its name cut to this width
MIN_SENTENCE_WIDTH = 16


def column_widths(screen_width: int, labellers: list[str], rows: int, padding: int = 1) -> tuple[int, list[int]]:
    """(sentence width, label-column widths) so that every score column fits on the screen: the
    sentence column takes what the others leave and its text wraps onto more lines."""
    scores = [min(max(len(name), 3), SCORE_WIDTH) for name in labellers]
    index = len(str(max(rows - 1, 0)))
    used = index + sum(scores) + 2 * padding * (len(scores) + 2) + 2  # + the vertical scrollbar
    return max(MIN_SENTENCE_WIDTH, screen_width - used), scores


class ReviewApp(App):
    """One rationale on screen: question, sentences with every labeller's score, correction diff."""

    TITLE = "ares review"
    CSS = """
    #question { height: auto; padding: 0 1; border: round $primary; }
    #sentences { height: auto; max-height: 60%; }
    #diff { height: auto; padding: 0 1; border: round $secondary; }
    #editor { height: 8; display: none; }
    """
    BINDINGS = [
        *(Binding(str(d), f"score({d / 10})", show=False) for d in range(10)),
        Binding("t", "score(1.0)", "1.0"),
        Binding("a", "accept", "Accept"),
        Binding("e", "edit", "Edit correction"),
        Binding("f", "flag", "Flag question"),
        Binding("n", "move(1)", "Next"),
        Binding("p", "move(-1)", "Previous"),
        Binding("ctrl+s", "save", "Save correction", priority=True),
        Binding("escape", "cancel", "Cancel edit", priority=True),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, store: Store, *, round: int | None = None, where: str | None = None, reviewer: str):
        super().__init__()
        self.store, self.reviewer = store, reviewer
        self.items = review_items(store, round, where)
        self.position = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="question")
        yield DataTable(id="sentences", cursor_type="row", zebra_stripes=True)
        yield Static(id="diff")
        yield TextArea(id="editor")
        yield Footer()

    def on_mount(self) -> None:
        self._show()

    def on_resize(self) -> None:
        """The sentence column follows the screen's width, so the score columns stay in view."""
        if self.item is not None and self.query("#sentences"):
            self._show(keep_row=True)

    @property
    def item(self) -> ReviewItem | None:
        return self.items[self.position] if self.items else None

    def _reload(self) -> None:
        """Read the current rationale back from the store after a change."""
        [self.items[self.position]] = review_items(self.store, where=f"r.id = {self.item.rationale.id}")
        self._show(keep_row=True)

    def _show(self, keep_row: bool = False) -> None:
        table = self.query_one("#sentences", DataTable)
        item = self.item
        if item is None:
            self.query_one("#question", Static).update("Nothing to review: no student rationales match.")
            return
        q = item.question
        head = Text(f"[{self.position + 1}/{len(self.items)}] rationale {item.rationale.id}, round "
                    f"{item.rationale.round}, question {q.source_id} ({q.dataset}/{q.split})\n", style="dim")
        head.append(q.question + "\n", style="bold")
        head.append("  ".join(f"({letter(i)}) {c}" for i, c in enumerate(q.choices)))
        if q.answer_index is not None:
            head.append(f"\nanswer: ({letter(q.answer_index)})")
        if q.image_path:
            head.append(f"\nimage: {q.image_path}")
        if item.flagged:
            head.append("\nFLAGGED AS BAD", style="bold red")
        self.query_one("#question", Static).update(head)
        row = table.cursor_row if keep_row else 0
        table.clear(columns=True)
        labellers = [*item.teachers, HUMAN]
        width, widths = column_widths(self.size.width, labellers, len(item.sentences), table.cell_padding)
        table.add_column("#")
        table.add_column("sentence", width=width)
        for name, name_width in zip(labellers, widths):
            table.add_column(name, width=name_width)
        for s in item.sentences:
            per = item.scores[s.id]
            table.add_row(str(s.idx), Text(s.text), *(_fmt(per.get(t)) for t in labellers), height=None)
        table.move_cursor(row=min(row, max(len(item.sentences) - 1, 0)))
        shown = item.shown_correction()
        diff = Text("correction" + (" (human)" if item.human_correction is not None else
                                    f" ({item.correction_model})" if shown else ": none") + "\n", style="dim")
        if shown:
            diff.append_text(correction_diff(item.rationale.text, shown))
        self.query_one("#diff", Static).update(diff)
        table.focus()

    def _sentence(self):
        item = self.item
        if item is None or not item.sentences or self.query_one("#editor", TextArea).display:
            return None
        return item.sentences[self.query_one("#sentences", DataTable).cursor_row]

    def action_score(self, score: float) -> None:
        sentence = self._sentence()
        if sentence is None:
            return
        with self.store.session() as session:
            record_score(session, sentence_id=sentence.id, score=score, reviewer=self.reviewer,
                         shown=self.item.teacher_score(sentence.id))
        self._reload()

    def action_accept(self) -> None:
        sentence = self._sentence()
        if sentence is None:
            return
        current = self.item.scores[sentence.id].get(HUMAN, self.item.teacher_score(sentence.id))
        if current is None:
            self.notify("no score to accept: type 0-9 or t", severity="warning")
            return
        self.action_score(current)

    def action_edit(self) -> None:
        if self.item is None:
            return
        editor = self.query_one("#editor", TextArea)
        editor.text = self.item.shown_correction() or self.item.rationale.text
        editor.display = True
        editor.focus()

    def action_save(self) -> None:
        editor = self.query_one("#editor", TextArea)
        if not editor.display:
            return
        with self.store.session() as session:
            record_correction(session, rationale_id=self.item.rationale.id, text=editor.text.strip(),
                              reviewer=self.reviewer, shown=self.item.shown_correction())
        editor.display = False
        self._reload()

    def action_cancel(self) -> None:
        editor = self.query_one("#editor", TextArea)
        if editor.display:
            editor.display = False
            self.query_one("#sentences", DataTable).focus()

    def action_flag(self) -> None:
        if self.item is None:
            return
        with self.store.session() as session:
            flag_question(session, question_id=self.item.question.id, bad=not self.item.flagged,
                          reviewer=self.reviewer)
        for other in self.items:
            if other.question.id == self.item.question.id:
                other.flagged = not other.flagged
        self._show(keep_row=True)

    def action_move(self, step: int) -> None:
        if self.items and 0 <= self.position + step < len(self.items):
            self.position += step
            self._show()
