"""Each heuristic filter: one kept and one dropped example (with its named reason)."""
import pytest

from lmforge.data.config import ExtractConfig, FilterConfig
from lmforge.data.extract import extract_html
from lmforge.data.filters import check_text
from lmforge.data.langid import detect

GOOD_EN = ("The river winds through the valley, and the old mill stands beside it. "
           "Farmers bring their grain in autumn, when the water runs high and fast. "
           "Children watch the wheel turn while their parents talk about the harvest, "
           "the weather, and the price of bread in the town across the hills.")
GOOD_ZH = ("河水穿过山谷，旧磨坊就立在河边。秋天水流湍急的时候，农民们把粮食运来磨成面粉。"
           "孩子们看着水车转动，父母们谈论着收成、天气，还有山那边小镇上面包的价格。")
CFG = FilterConfig(min_units=30)


def reason(text, **kw):
    cfg = FilterConfig(**{"min_units": 30, **kw})
    return check_text(text, cfg)[1]


def test_good_texts_kept_english_and_chinese():
    assert reason(GOOD_EN) is None
    assert reason(GOOD_ZH) is None  # CJK counts characters, so it is long enough


@pytest.mark.parametrize("text, why, kw", [
    ("Too short to keep.", "too_short", {}),
    (GOOD_EN, "too_long", {"max_units": 40}),
    ("短文本。", "too_short", {}),
    (" ".join(["a", "to", "is", "an"] * 20), "mean_word_len_low", {}),
    (" ".join(["extraordinarilylongwordsequence"] * 30), "mean_word_len_high", {}),
    (GOOD_EN + " " + "$$$ ### @@@ ^^^ ~~~ " * 20, "symbol_ratio", {}),
    (GOOD_EN + " " + "1234567890 " * 40, "digit_ratio", {"max_symbol_ratio": None}),
    ("\n".join(["- " + GOOD_EN[i * 20:(i + 1) * 20] for i in range(12)]), "bullet_lines",
     {"min_units": 5, "max_dup_line_ratio": None}),
    ("\n".join([GOOD_EN[i * 25:(i + 1) * 25] + "..." for i in range(10)]), "ellipsis_lines",
     {"min_units": 5}),
    ("\n".join([GOOD_EN] + ["Buy now and save big today"] * 5), "dup_lines", {}),
    (GOOD_EN + "\n\n" + GOOD_EN, "dup_paras", {"max_dup_line_ratio": None,
                                               "max_dup_line_char_ratio": None}),
    (GOOD_EN + " " + "cheap pills " * 40, "top_2gram", {}),
    (GOOD_ZH + "便宜好货快来买" * 20, "top_2gram", {}),  # CJK: the 2-word rule on 3-character grams
    (GOOD_EN + " " + " ".join(GOOD_EN.split()[:12]) * 3, "dup_5gram",
     {"max_top_ngram_ratio": {}}),
])
def test_each_filter_drops(text, why, kw):
    assert reason(text, **kw) == why
    if why != "too_long":  # the same settings keep a good text
        assert reason(GOOD_EN, **kw) is None and reason(GOOD_ZH, **kw) is None


def test_alpha_words():
    junk = GOOD_EN + " " + " ".join(["123", "4.5", "--", "::", "99"] * 20)
    kw = dict(max_symbol_ratio=None, max_digit_ratio=None, max_top_ngram_ratio={},
              max_dup_ngram_ratio={}, min_mean_word_len=None)
    assert reason(junk, **kw) == "alpha_word_ratio"
    assert reason(GOOD_EN, **kw) is None


def test_boilerplate_lines_removed_or_page_dropped():
    body = GOOD_EN.replace(". ", ".\n")
    page = body + "\nWe use cookies to improve your experience.\nAll rights reserved."
    text, why = check_text(page, CFG)
    assert why is None and text == body
    nav = "\n".join(["Home", "Menu", "Sign in", "Privacy policy", "Next", GOOD_EN])
    assert check_text(nav, CFG)[1] == "boilerplate"


def test_extract_html_keeps_title_and_lang():
    html = ("<html lang='zh-CN'><head><title>磨坊</title></head><body><nav>首页 | 关于</nav>"
            f"<article><p>{GOOD_ZH}</p><p>{GOOD_EN}</p></article></body></html>")
    for backend in ("resiliparse", "trafilatura"):
        text, meta = extract_html(html, backend)
        assert GOOD_ZH[:20] in text and "<p>" not in text
        assert meta["title"] == "磨坊" and meta["html_lang"] == "zh-CN"


def test_extract_html_keeps_lone_cjk_characters_and_quotes():
    """resiliparse 2.0.1 (main content) drops a text node of one 3-byte UTF-8 character, meaning
    to drop icon-font glyphs; the guard keeps real characters and still drops the icons."""
    from resiliparse.extract.html2text import extract_plain_text

    body = ("<p>「<span class='emph'>Date1</span>」是开始日期。</p><p>按<kbd>F1</kbd>键，"
            "<span>甲</span>的<span>乙</span>。 &ldquo;<b>Quoted</b>&rdquo; costs €<b>5</b> "
            "<i>&#xE001;</i><a href='#x'>¶</a></p>")
    page = f"<html><body><article>{body}<p>{GOOD_ZH}</p></article></body></html>"
    raw = extract_plain_text(page, main_content=True)
    assert raw.startswith("Date1」") and "按" not in raw and "甲" not in raw   # the bug guarded
    text, _ = extract_html(page)
    assert text.startswith("「Date1」是开始日期。\n\n按F1键，甲的乙。 “Quoted” costs €5")
    assert "\ue001" not in text and "¶" not in text and "\ufdd0" not in text
    assert text.endswith(GOOD_ZH)


def test_langid():
    assert detect(GOOD_EN)[0] == "en" and detect(GOOD_ZH)[0] == "zh"


def test_langid_folds_classical_chinese_labelled_wu_into_zh(monkeypatch):
    """py3langid labels many Tang poems "wuu" (Wu); the default alias keeps them as zh."""
    import lmforge.data.langid as langid
    from lmforge.data.config import LangidConfig
    monkeypatch.setattr(langid, "detect", lambda text, max_chars: ("wuu", 0.9))
    step = langid.LangidStep(LangidConfig(), None)
    doc, _ = step.open_shard(None, 0)(0, {"text": "今宵冬律尽，来朝丽景新。", "meta": {}})
    assert doc["meta"]["lang"] == "zh"
    step = langid.LangidStep(LangidConfig(aliases={}), None)
    assert step.open_shard(None, 0)(0, {"text": "今宵冬律尽，来朝丽景新。", "meta": {}}) == (None, "lang_wuu")
