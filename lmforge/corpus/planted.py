"""Planted documents with known truth: hand-written junk and edited near-duplicates.

The junk (ad pages, pages of navigation chrome around one sentence, obfuscated JS, spam
comments) is written independently of lmforge/data/degrade.py (the quality classifier's
synthetic negatives): other templates, other vocabulary, other page layouts, so a filter
catches it only when it generalises to junk it has not seen. The quality and topics tests
plant it; so does the corpus stage (`plant:`), whose planted documents carry meta.planted
("junk" / "duplicate") for the data stage to score its steps against (lmforge.stages.data).
"""
from __future__ import annotations

import random

PRODUCTS_EN = ["designer handbags", "running shoes", "phone cases", "vitamin gummies", "led strips",
               "gaming chairs", "hair extensions", "car seat covers", "smart watches", "yoga mats"]
CITIES = ["Dallas", "Leeds", "Perth", "Denver", "Austin", "Cork", "Tampa", "Boise"]
PRODUCTS_ZH = ["不锈钢水箱", "办公家具", "净水器", "led显示屏", "茶叶礼盒", "钢结构厂房", "塑料托盘", "空气能热水器"]
NAV_EN = ["Home | News | Sports | Weather | Video | Contact", "Sign in to comment", "Share on Facebook",
          "Share on X", "Email this article", "Most popular", "Trending now", "Advertisement",
          "Newsletter sign-up", "Our partners", "Careers | Advertise with us | Help", "© 2023 Daily Media Group",
          "Report an error", "Print", "Comments (0)", "Load more"]
NAV_ZH = ["网站首页 | 新闻中心 | 产品展示 | 联系方式", "技术支持：百联网络", "当前位置：首页 > 新闻资讯", "热门标签",
          "在线留言", "客户案例", "Copyright © 2023 某某科技有限公司", "浙ICP备2023000123号-1", "扫一扫关注我们",
          "上一条：暂无", "下一条：暂无", "点击次数：1024", "打印本页", "关闭窗口"]


def ad_page_en(rng: random.Random) -> str:
    p, c = rng.choice(PRODUCTS_EN), rng.choice(CITIES)
    lines = [f"Looking for {p} in {c}? You found the right place!",
             f"Unbeatable savings on {p} - up to {rng.randint(40, 80)}% off today only.",
             f"Hurry, stock is limited!!! Get your {p} before they are gone.",
             f"{p} cheap, {p} online, {p} wholesale, {p} {c}, {p} near me, {p} reviews.",
             f"Call {rng.randint(200, 999)}-{rng.randint(100, 999)}-{rng.randint(1000, 9999)} or order at "
             f"www.{p.replace(' ', '')}{rng.randint(1, 99)}.shop",
             "Don't miss out - thousands of happy customers can't be wrong!!!"]
    rng.shuffle(lines)
    return "\n".join(lines * rng.randint(1, 2))


def chrome_page(rng: random.Random, sentence: str, words: list[str]) -> str:
    """A navigation-chrome page: 14-24 menu words with one real sentence among them."""
    nav = [rng.choice(words) for _ in range(rng.randint(14, 24))]
    nav.insert(rng.randint(4, 10), sentence)
    return "\n".join(nav)


def chrome_page_en(rng: random.Random, sentence: str) -> str:
    return chrome_page(rng, sentence, NAV_EN)


def ad_page_zh(rng: random.Random) -> str:
    p = rng.choice(PRODUCTS_ZH)
    phone = f"1{rng.randint(3, 9)}{rng.randint(100000000, 999999999)}"
    lines = [f"【厂家直供】{p}批发价格实惠，质量保证，欢迎来电咨询！",
             f"联系电话：{phone}（同微信），全国送货上门。",
             f"{p}哪家好？{p}多少钱？{p}价格表，{p}厂家，{p}供应商，就选我们！",
             "现在下单立享八折，数量有限，先到先得！！！",
             f"本公司专业生产{p}二十年，产品畅销全国各地，深受客户好评。"]
    rng.shuffle(lines)
    return "\n".join(lines * rng.randint(1, 2))


def chrome_page_zh(rng: random.Random, sentence: str) -> str:
    return chrome_page(rng, sentence, NAV_ZH)


def obfuscated_js(rng: random.Random) -> str:
    names = [f"_0x{rng.randint(0x1000, 0xffff):x}" for _ in range(6)]
    arr = ",".join(f"'\\x{rng.randint(0x20, 0x7e):02x}\\x{rng.randint(0x20, 0x7e):02x}'" for _ in range(40))
    body = ";".join(f"{rng.choice(names)}[{rng.choice(names)}({rng.randint(0, 400)})]"
                    f"({rng.choice(names)}+0x{rng.randint(0, 255):x})" for _ in range(30))
    return f"var {names[0]}=[{arr}];(function({names[1]},{names[2]}){{{body}}}({names[0]},0x{rng.randint(0, 999):x}));"


def chrome_page_code(rng: random.Random, snippet: str) -> str:
    nav = ["Copy code", "Run", "Share", "Log in", "Sign up", "Questions", "Tags", "Users",
           "Ask Question", "Asked 3 years ago", "Viewed 12k times", "Upvote", "Add a comment",
           "Not the answer you're looking for? Browse other questions tagged python", "Hot Network Questions"]
    lines = [rng.choice(nav) for _ in range(rng.randint(14, 24))]
    lines.insert(rng.randint(4, 10), snippet)
    return "\n".join(lines)


def spam_comment_code(rng: random.Random) -> str:
    p = rng.choice(PRODUCTS_EN)
    out = []
    for i in range(rng.randint(8, 14)):
        out.append(f"# cheap {p} best {p} buy {p} online {p} sale {p} {rng.choice(CITIES)}")
        out.append(f"x{i} = '{p}'  # {p} {p} {p}")
    return "\n".join(out)


def first_sentence(text: str, n: int = 25) -> str:
    words = text.split()
    return " ".join(words[:n])


def junk(lang: str, rng: random.Random, good: list[str], n: int) -> list[tuple[str, str]]:
    """n junk documents (kind, text) for lang in en / zh / code, three kinds in turn."""
    out = []
    for i in range(n):
        k = i % 3
        if lang == "en":
            out.append(("ad", ad_page_en(rng)) if k == 0 else
                       ("chrome", chrome_page_en(rng, first_sentence(rng.choice(good)))) if k == 1 else
                       ("ad", ad_page_en(rng) + "\n" + ad_page_en(rng)))
        elif lang == "zh":
            out.append(("ad", ad_page_zh(rng)) if k == 0 else
                       ("chrome", chrome_page_zh(rng, rng.choice(good)[:40])) if k == 1 else
                       ("ad", ad_page_zh(rng) + "\n" + ad_page_zh(rng)))
        else:
            snippet = "\n".join(rng.choice(good).splitlines()[:3])
            out.append(("obfuscated", obfuscated_js(rng)) if k == 0 else
                       ("chrome", chrome_page_code(rng, snippet)) if k == 1 else
                       ("spam", spam_comment_code(rng)))
    return out


PLANTED_FILE = "zz-planted.jsonl.zst"   # sorts after every source: a planted copy comes after its original


def edited_copy(text: str, rate: float, rng: random.Random, cjk: bool) -> str:
    """text with a share `rate` of its units (characters for Chinese, else space-separated
    words) replaced by other units of the same text: a near-duplicate of known edit distance."""
    units = list(text) if cjk else text.split(" ")
    pool = [u for u in units if u.strip()] or units
    for j in rng.sample(range(len(units)), max(1, round(len(units) * rate))):
        units[j] = rng.choice(pool)
    return ("" if cjk else " ").join(units)


LANG_OF_DOMAIN = {"prose": "en", "zh": "zh", "code": "code"}


def plant(docs: list[dict], n_duplicates: int, n_junk: int, edit: tuple[float, float], seed: int = 0) -> list[dict]:
    """Planted documents for a corpus of `docs` ({"id", "text", "meta"}): n_duplicates edited
    copies of documents of >= 200 characters (edit rate uniform in `edit`), and n_junk junk
    pages, each spread evenly over the prose / zh / code domains. meta.planted says which;
    a copy's meta.planted_of names its original."""
    rng = random.Random(seed)
    out = []
    by_domain = {d: [x for x in docs if x["meta"].get("domain") == d and len(x["text"]) >= 200
                     and x["meta"].get("format") != "html"] for d in LANG_OF_DOMAIN}
    domains = [d for d in LANG_OF_DOMAIN if by_domain[d]]
    for i in range(n_duplicates if domains else 0):
        d = domains[i % len(domains)]
        src = rng.choice(by_domain[d])
        rate = rng.uniform(*edit)
        out.append({"id": f"planted/duplicate-{i}", "text": edited_copy(src["text"], rate, rng, d == "zh"),
                    "meta": {**src["meta"], "planted": "duplicate", "planted_of": src["id"], "edit": round(rate, 4)}})
    for i in range(n_junk if domains else 0):
        d = domains[i % len(domains)]
        lang = LANG_OF_DOMAIN[d]
        kind, text = junk(lang, rng, [x["text"] for x in by_domain[d]], 1 + i // len(domains) % 3)[-1]
        out.append({"id": f"planted/junk-{i}", "text": text,
                    "meta": {"source": "planted", "domain": d, "lang": lang, "planted": "junk", "junk_kind": kind,
                             **({"format": "python"} if d == "code" else {})}})
    return out
