"""Role-play characters (Index-1.9B-character): a chat model + retrieval + few-shot dialogue.

A character card (YAML):

    name: Lin
    persona: A retired lighthouse keeper from Xiamen who ...
    greeting: ""                          # optional first assistant line (shown, not sent)
    examples:                             # few-shot dialogue, put before the conversation
      - {user: "Who are you?", assistant: "I kept the light at ..."}
    knowledge: knowledge/                 # folder of documents (txt, md, jsonl, ...), relative to the card
    top_k: 3                              # passages retrieved per turn
    passage_chars: 400                    # knowledge is cut into passages of about this size

Every turn, the user's latest message is the query of a BM25 search (the `bm25s` library)
over the knowledge passages; tokens are words, lower-cased, with Chinese segmented by
`jieba`, so a Chinese question finds a Chinese passage. The prompt is ChatML:

    system:    "You are {name}. {persona}" + the retrieved passages
    user/assistant: the card's example exchanges (few-shot)
    ...the conversation so far, then the new user message

and it is fitted to the window by middle truncation (lmforge.truncate: the persona, the
passages and the newest turns survive). `lmforge character` builds a package (card.json,
passages.jsonl, the BM25 index) that `lmforge chat --character` loads as well as a card.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.config import ConfigError, check, from_dict, read_yaml, to_dict

CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class Card:
    name: str = ""
    persona: str = ""
    greeting: str = ""
    examples: list[dict[str, str]] = field(default_factory=list)
    knowledge: str = ""
    top_k: int = 3
    passage_chars: int = 400

    def __post_init__(self):
        check(bool(self.name.strip()), "name", "the character needs a name")
        check(bool(self.persona.strip()), "persona", "describe the character in persona")
        for i, ex in enumerate(self.examples):
            check(set(ex) == {"user", "assistant"}, f"examples[{i}]", "needs exactly the keys user and assistant")
        check(self.top_k >= 0, "top_k", "must be >= 0")
        check(self.passage_chars >= 50, "passage_chars", "must be >= 50")


# ------------------------------------------------------------------ passages and BM25


def bm25_tokens(text: str) -> list[str]:
    """Lower-cased words; text with Chinese characters is segmented by jieba first."""
    text = text.lower()
    if CJK.search(text):
        import jieba
        jieba.setLogLevel(60)
        words = jieba.lcut(text)
    else:
        words = WORD.findall(text)
    return [w for w in (x.strip() for x in words) if w and WORD.search(w)]


def split_passages(text: str, max_chars: int) -> list[str]:
    """Paragraphs (blank-line separated) merged up to ~max_chars; longer ones cut at sentence
    ends (。！？.!?) or, failing that, at the last space before max_chars."""
    out, cur = [], ""
    for para in (p.strip() for p in re.split(r"\n\s*\n", text)):
        if not para:
            continue
        pieces = [para]
        if len(para) > max_chars:
            pieces, buf = [], ""
            for sent in re.split(r"(?<=[。！？.!?])\s*", para):
                while len(sent) > max_chars:          # at a space when there is one (not mid-word)
                    cut = sent.rfind(" ", 0, max_chars)
                    cut = cut if cut > max_chars // 2 else max_chars
                    pieces.append(sent[:cut].strip())
                    sent = sent[cut:].strip()
                if buf and len(buf) + len(sent) + 1 > max_chars:
                    pieces.append(buf)
                    buf = ""
                buf = f"{buf} {sent}".strip() if sent else buf
            if buf:
                pieces.append(buf)
        for p in pieces:
            if cur and len(cur) + len(p) + 1 > max_chars:
                out.append(cur)
                cur = ""
            cur = f"{cur}\n{p}".strip()
    if cur:
        out.append(cur)
    return out


class KnowledgeIndex:
    """BM25 over passages (bm25s); saved as passages.jsonl + a bm25s index folder."""

    def __init__(self, passages: list[dict], retriever=None, documents: int = 0):
        import bm25s

        self.passages = passages
        self.documents = documents    # how many documents the passages were cut from (0: not known)
        self.retriever = retriever
        if retriever is None and passages:
            self.retriever = bm25s.BM25()
            self.retriever.index([bm25_tokens(p["text"]) or ["\u2205"] for p in passages], show_progress=False)

    @classmethod
    def from_folder(cls, folder: str | Path, max_chars: int, errors=None) -> "KnowledgeIndex":
        """The folder's documents cut into passages; bad records go to `errors` (an ErrorSink:
        the `character` stage's rejects file; by default logged). `documents`: how many were read."""
        from lmforge.io.documents import ErrorSink
        from lmforge.io.readers import iter_documents

        if not Path(folder).exists():
            raise FileNotFoundError(f"{folder}: knowledge folder not found")
        passages, n = [], 0
        for doc in iter_documents(str(folder), errors if errors is not None else ErrorSink()):
            src = str(doc.get("id") or doc.get("source") or "")
            passages += [{"text": t, "source": src} for t in split_passages(doc["text"], max_chars)]
            n += 1
        return cls(passages, documents=n)

    def search(self, query: str, k: int) -> list[dict]:
        q = bm25_tokens(query)
        if not q or not self.passages or k <= 0:
            return []
        docs, scores = self.retriever.retrieve([q], k=min(k, len(self.passages)), show_progress=False)
        return [{**self.passages[int(i)], "score": float(s)} for i, s in zip(docs[0], scores[0]) if s > 0]

    def save(self, out: Path) -> None:
        from lmforge.io.atomic import write_jsonl
        write_jsonl(out / "passages.jsonl", self.passages)
        if self.retriever is not None:
            self.retriever.save(str(out / "bm25"))

    @classmethod
    def load(cls, folder: Path) -> "KnowledgeIndex":
        import bm25s
        passages = [json.loads(line) for line in (folder / "passages.jsonl").read_text(encoding="utf-8").splitlines()
                    if line.strip()]
        return cls(passages, bm25s.BM25.load(str(folder / "bm25")) if passages else None)


# ------------------------------------------------------------------ the character


class Character:
    def __init__(self, card: Card, index: KnowledgeIndex | None):
        self.card, self.index = card, index

    @classmethod
    def load(cls, path: str | Path, errors=None) -> "Character":
        """A card YAML (knowledge indexed now; its bad records to `errors`, an ErrorSink) or a
        package folder built by `lmforge character`."""
        p = Path(path)
        if p.is_dir():
            if not (p / "card.json").is_file():
                raise FileNotFoundError(f"{p}: not a character package (no card.json; build one with "
                                        f"`lmforge character`)")
            card = from_dict(Card, json.loads((p / "card.json").read_text(encoding="utf-8")), str(p / "card.json"))
            return cls(card, KnowledgeIndex.load(p))
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such character card")
        card = from_dict(Card, read_yaml(p), str(p))
        index = None
        if card.knowledge:
            folder = (p.parent / card.knowledge) if not Path(card.knowledge).is_absolute() else Path(card.knowledge)
            try:
                index = KnowledgeIndex.from_folder(folder, card.passage_chars, errors)
            except FileNotFoundError as e:
                raise ConfigError(f"{p}: knowledge: {e}") from None
        return cls(card, index)

    def retrieve(self, query: str) -> list[dict]:
        return self.index.search(query, self.card.top_k) if self.index is not None else []

    def system_prompt(self, passages: list[dict]) -> str:
        text = f"You are {self.card.name}. {self.card.persona.strip()}\nStay in character."
        if passages:
            text += "\n\nWhat you know (use it when it is relevant):\n" + "\n".join(f"- {p['text']}" for p in passages)
        return text

    def messages(self, conversation: list[dict]) -> tuple[list[dict], list[dict]]:
        """(ChatML messages for a conversation ending with the user's turn, passages used)."""
        query = next((m["content"] for m in reversed(conversation) if m["role"] == "user"), "")
        passages = self.retrieve(query)
        shots = [m for ex in self.card.examples for m in ({"role": "user", "content": ex["user"]},
                                                           {"role": "assistant", "content": ex["assistant"]})]
        convo = [m for m in conversation if m["role"] != "system"]
        return [{"role": "system", "content": self.system_prompt(passages)}, *shots, *convo], passages

    def prompt_text(self, user: str) -> str:
        from lmforge.align.chat_template import render
        msgs, _ = self.messages([{"role": "user", "content": user}])
        return render(msgs, add_generation_prompt=True)

    def to_json(self) -> dict:
        return to_dict(self.card)


def character_session(model, tokenizer, character: Character, **kwargs):
    """A ChatSession whose every prompt is the character's (persona, passages, examples)."""
    from lmforge.align.chat_template import render
    from lmforge.infer.chat import ChatSession

    class CharacterSession(ChatSession):
        last_passages: list[dict] = []

        def prompt_ids(self) -> list[int]:
            msgs, self.last_passages = character.messages(self.messages)
            self.last_messages = msgs
            return self.tok.encode(render(msgs, add_generation_prompt=True), add_special_tokens=False).ids

    return CharacterSession(model, tokenizer, system=None, **kwargs)
