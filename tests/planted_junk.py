"""The hand-written junk the quality and topics tests plant (now lmforge.corpus.planted, where the
tiny recipe's corpus stage plants it too, with known truth for the data stage's recall/precision)."""
from lmforge.corpus.planted import (CITIES, ad_page_en, ad_page_zh, chrome_page_code, chrome_page_en,  # noqa: F401
                                    chrome_page_zh, first_sentence, junk, obfuscated_js, spam_comment_code)
