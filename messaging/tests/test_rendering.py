import random

from messaging.rendering import _full, render


def test_markdown_subset_renders():
    html = render("hi *there* **you** `code` ~~gone~~\n\n- a\n- b")
    assert "<em>there</em>" in html and "<strong>you</strong>" in html
    assert "<code>code</code>" in html and "<s>gone</s>" in html and "<li>a</li>" in html


def test_script_tags_and_javascript_links_are_removed():
    for source in (
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "[click](javascript:alert(1))",
        "[click](JaVaScRiPt:alert(1))",
        "<a href='javascript:alert(1)'>x</a>",
        "[x](data:text/html;base64,PHNjcmlwdD4=)",
        "<javascript:alert(1)>",
    ):
        html = render(source)
        assert "<script" not in html.lower()
        assert "<img" not in html.lower()
        assert 'href="javascript' not in html.lower()
        assert 'href="data' not in html.lower()


def test_safe_links_keep_rel_noopener():
    html = render("[docs](https://example.com/a?b=1)")
    assert 'href="https://example.com/a?b=1"' in html
    assert 'rel="noopener noreferrer nofollow"' in html


def test_plain_text_comes_out_as_the_markdown_renderer_gives_it():
    """Plain text skips the Markdown parser; what it gives must be what the parser gives."""
    alphabet = "aZ09 ,.!?'():;/%=@$+-_*`~[]<>&\\\"#|\n\t\xa0é漢😀\u200b\u2028"
    rng = random.Random(7)
    samples = ["Hello there", "ok", "é is fine", "a  b", "see http://x.org/a?b=1", "1. no"]
    samples += [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(3000)
    ]
    plainish = "aZ09 ,.!?'():;/%=@$+-é漢😀\u200b\xa0"
    samples += ["w" + "".join(rng.choice(plainish) for _ in range(20)) for _ in range(3000)]
    for text in samples:
        assert render(text) == _full(text), text
