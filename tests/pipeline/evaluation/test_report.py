"""report.md shows what models and profiles wrote: it must stay inert Markdown. The oracle is a
real renderer, markdown-it-py (CommonMark + GFM tables), not our own reading of the text."""

from __future__ import annotations

from markdown_it import MarkdownIt

from pipeline.evaluation import report

HOSTILE = {
    "handle": "mallory|admin`<img src=x onerror=alert(1)>",
    "error": "not_json",
    "raw": "``` </td><script>alert(1)</script> | fake | cells [link](http://evil) \u202eevil\nnext line **bold**",
}


def a_report(profiles: list[dict]) -> dict:
    metrics = {
        "profiles": 1,
        "holdout_profiles": 1,
        "seed_profiles": 0,
        "spearman": None,
        "mae": None,
        "valid_answers": 0,
        "prompt_tokens_mean": 10.0,
        "answer_tokens_mean": 5.0,
        "answer_tokens_max": 5,
    }
    return {
        "model": "mistral-researcher:run-1",
        "passed": False,
        "backend": "ollama",
        "metrics": metrics,
        "created_at": "2026-11-29T00:00:00+00:00",
        "gates": [],
        "profiles": profiles,
    }


def render(markdown: str):
    return MarkdownIt("commonmark").enable("table").parse(markdown)


def test_what_a_model_or_a_profile_wrote_renders_as_text_in_one_table_cell():
    markdown = report.markdown(a_report([{"set": "holdout", "valid": False, **HOSTILE}]))
    tokens = render(markdown)
    start = max(i for i, token in enumerate(tokens) if token.type == "table_open")
    tokens = tokens[start:]  # the invalid-answers table: everything untrusted is in it
    kinds = {token.type for token in tokens} | {child.type for token in tokens for child in token.children or []}
    assert not kinds & {"html_inline", "html_block", "code_inline", "link_open", "strong_open", "fence", "code_block"}
    rows = [token for token in tokens if token.type == "tr_open"]
    cells_per_row = []
    for token in tokens:
        if token.type == "tr_open":
            cells_per_row.append(0)
        elif token.type in ("td_open", "th_open"):
            cells_per_row[-1] += 1
    assert len(rows) == 2 and cells_per_row == [4, 4]  # the header and the one hostile row, four cells each
    texts = [child.content for token in tokens if token.type == "inline" for child in token.children or [] if child.type == "text"]
    rendered = " ".join(texts)
    assert "mallory|admin`<img src=x onerror=alert(1)>" in rendered  # shown as written, as text
    assert "\u202e" not in markdown and "\n" not in HOSTILE["handle"]


def test_bidi_controls_are_removed_by_cleaning_but_emoji_joiners_stay():
    from pipeline import prompt

    assert prompt.clean_text("ab\u202ecd\u2066ef\u200fgh") == "abcdefgh"
    assert prompt.clean_text("scientist 👩\u200d🔬") == "scientist 👩\u200d🔬"
