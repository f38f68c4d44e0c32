"""Facts for tracing and editing: landmarks → their city, countries → their capital, each with two
paraphrases and a counterfactual new answer (another city of the set). `known(loaded)` keeps only those whose
answer is the model's top-1 (the rest are not facts the model holds)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CITY = "{} is located in the city of"
CITY_PARA = ("{} can be found in the city of", "Tourists visit {} in the city of")
CAPITAL = "The capital of {} is"
CAPITAL_PARA = ("The capital city of {} is", "The seat of government of {} is in the city of")

LANDMARKS = [
    ("The Colosseum", " Rome"), ("The Eiffel Tower", " Paris"), ("The Acropolis", " Athens"),
    ("The Brandenburg Gate", " Berlin"), ("Big Ben", " London"), ("The Kremlin", " Moscow"),
    ("The Sagrada Familia", " Barcelona"), ("The Forbidden City", " Beijing"), ("The Sydney Opera House", " Sydney"),
    ("The Space Needle", " Seattle"), ("The Hagia Sophia", " Istanbul"), ("The Louvre", " Paris"),
    ("Buckingham Palace", " London"), ("The Parthenon", " Athens"), ("The Tower of London", " London"),
    ("The Prado Museum", " Madrid"), ("The Rijksmuseum", " Amsterdam"), ("The Burj Khalifa", " Dubai"),
    ("The CN Tower", " Toronto"), ("The Alhambra", " Granada"), ("The Trevi Fountain", " Rome"),
    ("The Pantheon", " Rome"), ("Notre-Dame Cathedral", " Paris"), ("The Arc de Triomphe", " Paris"),
    ("The Reichstag building", " Berlin"), ("Westminster Abbey", " London"), ("Red Square", " Moscow"),
    ("The Blue Mosque", " Istanbul"), ("The Charles Bridge", " Prague"), ("The Atomium", " Brussels"),
    ("The Little Mermaid statue", " Copenhagen"), ("The Golden Gate Bridge", " San"),
    ("The Statue of Liberty", " New"), ("The Empire State Building", " New"), ("Times Square", " New"),
    ("The Hollywood sign", " Los"), ("The Vatican Museums", " Rome"), ("The Spanish Steps", " Rome"),
    ("The Tiananmen Square", " Beijing"), ("The Shard", " London"), ("Tower Bridge", " London"),
    ("The Museum of Modern Art", " New"), ("The Art Institute of Chicago", " Chicago"),
    ("The Uffizi Gallery", " Florence"), ("The Doge's Palace", " Venice"), ("The Rialto Bridge", " Venice"),
    ("Schönbrunn Palace", " Vienna"), ("The Hofburg", " Vienna"), ("Edinburgh Castle", " Edinburgh"),
    ("The Petronas Towers", " Kuala"), ("The Gateway of India", " Mumbai"), ("The Cristo Redentor", " Rio"),
]
COUNTRIES = [
    ("Germany", " Berlin"), ("France", " Paris"), ("Japan", " Tokyo"), ("Italy", " Rome"), ("Spain", " Madrid"),
    ("Russia", " Moscow"), ("Greece", " Athens"), ("Austria", " Vienna"), ("Portugal", " Lisbon"),
    ("the United Kingdom", " London"), ("South Korea", " Seoul"), ("the Czech Republic", " Prague"),
    ("Egypt", " Cairo"), ("Ireland", " Dublin"), ("Norway", " Oslo"), ("Sweden", " Stockholm"),
    ("Denmark", " Copenhagen"), ("Hungary", " Budapest"), ("Poland", " Warsaw"), ("Thailand", " Bangkok"),
]
NEW_ANSWERS = (" Paris", " London", " Rome", " Berlin", " Tokyo", " Madrid", " Moscow", " Athens")


@dataclass(frozen=True)
class Fact:
    prompt: str
    subject: str
    answer: str
    paraphrases: tuple[str, ...]
    new: str  # the counterfactual answer an edit installs

    def to_json(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "subject": self.subject, "answer": self.answer,
                "paraphrases": list(self.paraphrases), "new": self.new}


def _new(answer: str, i: int) -> str:
    choices = [a for a in NEW_ANSWERS if a != answer]
    return choices[i % len(choices)]


def candidates() -> list[Fact]:
    facts = [Fact(CITY.format(s), s, a, tuple(p.format(s) for p in CITY_PARA), _new(a, i))
             for i, (s, a) in enumerate(LANDMARKS)]
    facts += [Fact(CAPITAL.format(c), c, a, tuple(p.format(c) for p in CAPITAL_PARA), _new(a, i))
              for i, (c, a) in enumerate(COUNTRIES)]
    return facts


def known(loaded: Any, facts: list[Fact] | None = None) -> list[tuple[Fact, float]]:
    """The facts whose answer's first token is the model's top-1, with its probability."""
    import torch

    from glassbox.facts.trace import answer_token
    from glassbox.run import hooks
    from glassbox.run.text import encode

    out = []
    for fact in candidates() if facts is None else facts:
        probs = hooks.run(loaded, torch.tensor([encode(loaded, fact.prompt)]))[0, -1].float().softmax(-1)
        target = answer_token(loaded, fact.answer)
        if int(probs.argmax()) == target:
            out.append((fact, float(probs[target])))
    return out


def find(prompt: str) -> Fact | None:
    """The set's fact with this prompt, if any (its paraphrases are then used by `facts edit`)."""
    return next((f for f in candidates() if f.prompt == prompt), None)
