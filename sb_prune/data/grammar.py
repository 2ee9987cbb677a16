"""The vocabulary and sentence grammar of the synthetic corpus.

Sentences of 3 to 9 words are statements, questions or commands drawn
from eight templates over a vocabulary of about 200 words. Every
sentence holds exactly one keyword out of ten, always in a noun slot
whose position depends on the template, so a keyword classifier has to
recognise the word rather than a position or a fixed sentence.
Homophones (``by``/``buy``, ``their``/``there``...) are kept out.

Authors
 * sb_prune developers
"""

from typing import NamedTuple, Tuple

MIN_WORDS = 3
MAX_WORDS = 9

KEYWORDS = (
    "river",
    "garden",
    "window",
    "market",
    "engine",
    "letter",
    "forest",
    "kitchen",
    "station",
    "island",
)

PRONOUNS = ("i", "you", "we", "they", "he", "she")
DETERMINERS = ("the", "a", "my", "your", "his", "her", "our", "this", "that")
ADJECTIVES = (
    "old new small big red green blue yellow quiet bright dark warm cold "
    "happy heavy empty strange little young clever gentle simple broken "
    "famous tiny lovely busy dirty wooden silver"
).split()
AGENTS = (
    "farmer teacher doctor sister brother mother father friend captain "
    "baker driver student child king queen neighbor soldier painter sailor "
    "dog cat bird horse rabbit monkey"
).split()
THINGS = (
    "book chair table door house road tree flower apple bread coffee paper "
    "picture lamp clock phone basket bottle ticket jacket stone ball bridge "
    "village mountain boat car box camera candle blanket bucket hammer "
    "mirror pencil wallet"
).split()
VERBS = (
    ("see", "saw"),
    ("find", "found"),
    ("take", "took"),
    ("bring", "brought"),
    ("carry", "carried"),
    ("open", "opened"),
    ("paint", "painted"),
    ("clean", "cleaned"),
    ("sell", "sold"),
    ("buy", "bought"),
    ("move", "moved"),
    ("watch", "watched"),
    ("hold", "held"),
    ("keep", "kept"),
    ("leave", "left"),
    ("want", "wanted"),
    ("like", "liked"),
    ("need", "needed"),
    ("build", "built"),
    ("draw", "drew"),
    ("fix", "fixed"),
    ("wash", "washed"),
    ("push", "pushed"),
    ("pull", "pulled"),
    ("show", "showed"),
    ("visit", "visited"),
    ("check", "checked"),
    ("follow", "followed"),
    ("forget", "forgot"),
    ("remember", "remembered"),
)
PREPOSITIONS = (
    "in near behind under beside inside across from into with on above"
).split()
ADVERBS = "again quickly slowly today carefully together".split()
PAST_ADVERBS = ADVERBS + "yesterday finally once".split()
FUTURE_ADVERBS = ADVERBS + "now tonight soon tomorrow".split()
QUESTION_WORDS = ("where", "when", "why", "how")
MODALS = ("can", "will", "could", "should")
FUNCTION_WORDS = ("an", "did", "is", "there", "please")


class Sentence(NamedTuple):
    """One sampled sentence and its labels.

    Arguments
    ---------
    words : tuple of str
        Lower-case words.
    keyword : str
        The one keyword in ``words``.
    template : str
        Name of the template that produced it (a key of ``TEMPLATES``).
    kind : str
        ``"statement"``, ``"question"`` or ``"command"``.

    Example
    -------
    >>> sentence = Sentence(("where", "is", "the", "river"), "river",
    ...                     "question_location", "question")
    >>> sentence.transcript, sentence.text
    ('WHERE IS THE RIVER', 'where is the river?')
    """

    words: Tuple[str, ...]
    keyword: str
    template: str
    kind: str

    @property
    def transcript(self):
        """str: upper-case words, as in LibriSpeech ``.trans.txt`` files."""
        return " ".join(self.words).upper()

    @property
    def text(self):
        """str: what the synthesiser reads, punctuated for intonation."""
        mark = {"statement": ".", "question": "?", "command": "!"}[self.kind]
        words = ["I" if word == "i" else word for word in self.words]
        return " ".join(words) + mark


def _maybe(rng, words, probability=0.3):
    return list(words) if rng.random() < probability else []


def _noun_phrase(rng, noun):
    determiner = rng.choice(DETERMINERS)
    phrase = [determiner] + _maybe(rng, [rng.choice(ADJECTIVES)]) + [noun]
    if determiner == "a" and phrase[1][0] in "aeiou":
        phrase[0] = "an"
    return phrase


def _subject(rng):
    if rng.random() < 0.4:
        return [rng.choice(PRONOUNS)]
    return _noun_phrase(rng, rng.choice(AGENTS))


def _place_pair(rng, keyword):
    """Two noun phrases joined by a preposition, keyword in either one."""
    nouns = [keyword, rng.choice(THINGS)]
    rng.shuffle(nouns)
    return (
        _noun_phrase(rng, nouns[0])
        + [rng.choice(PREPOSITIONS)]
        + _noun_phrase(rng, nouns[1])
    )


def _statement(rng, keyword):
    verb = rng.choice(VERBS)[1]
    tail = _maybe(rng, [rng.choice(PAST_ADVERBS)])
    return _subject(rng) + [verb] + _noun_phrase(rng, keyword) + tail


def _statement_place(rng, keyword):
    verb = rng.choice(VERBS)[1]
    return _subject(rng) + [verb] + _place_pair(rng, keyword)


def _statement_there(rng, keyword):
    place = [rng.choice(PREPOSITIONS)] + _noun_phrase(rng, rng.choice(THINGS))
    return ["there", "is"] + _noun_phrase(rng, keyword) + place


def _question_yes_no(rng, keyword):
    if rng.random() < 0.5:
        auxiliary, adverbs = "did", PAST_ADVERBS
    else:
        auxiliary, adverbs = rng.choice(MODALS), FUTURE_ADVERBS
    verb = rng.choice(VERBS)[0]
    tail = _maybe(rng, [rng.choice(adverbs)])
    return (
        [auxiliary] + _subject(rng) + [verb] + _noun_phrase(rng, keyword) + tail
    )


def _question_wh(rng, keyword):
    auxiliary = rng.choice(("did",) + MODALS)
    verb = rng.choice(VERBS)[0]
    head = [rng.choice(QUESTION_WORDS), auxiliary]
    return head + _subject(rng) + [verb] + _noun_phrase(rng, keyword)


def _question_location(rng, keyword):
    if rng.random() < 0.5:
        return ["where", "is"] + _noun_phrase(rng, keyword)
    return ["is"] + _place_pair(rng, keyword)


def _command(rng, keyword):
    verb = rng.choice(VERBS)[0]
    tail = _maybe(rng, [rng.choice(FUTURE_ADVERBS)])
    return _maybe(rng, ["please"]) + [verb] + _noun_phrase(rng, keyword) + tail


def _command_place(rng, keyword):
    return [rng.choice(VERBS)[0]] + _place_pair(rng, keyword)


#: Template name -> (sentence kind, word sampler).
TEMPLATES = {
    "statement": ("statement", _statement),
    "statement_place": ("statement", _statement_place),
    "statement_there": ("statement", _statement_there),
    "question_yes_no": ("question", _question_yes_no),
    "question_wh": ("question", _question_wh),
    "question_location": ("question", _question_location),
    "command": ("command", _command),
    "command_place": ("command", _command_place),
}

VOCABULARY = tuple(
    sorted(
        set(KEYWORDS)
        | set(PRONOUNS)
        | set(DETERMINERS)
        | set(ADJECTIVES)
        | set(AGENTS)
        | set(THINGS)
        | {form for verb in VERBS for form in verb}
        | set(PREPOSITIONS)
        | set(PAST_ADVERBS)
        | set(FUTURE_ADVERBS)
        | set(QUESTION_WORDS)
        | set(MODALS)
        | set(FUNCTION_WORDS)
    )
)


def sample_sentence(rng, keyword, template):
    """Draw one sentence of ``MIN_WORDS`` to ``MAX_WORDS`` words.

    Arguments
    ---------
    rng : random.Random
        Source of randomness.
    keyword : str
        One of ``KEYWORDS``; the sentence holds it exactly once.
    template : str
        One of ``TEMPLATES``.

    Returns
    -------
    Sentence
        The words with their labels.

    Example
    -------
    >>> import random
    >>> sentence = sample_sentence(random.Random(0), "river", "command")
    >>> sentence.words.count("river"), sentence.kind
    (1, 'command')
    >>> sentence.transcript == sentence.transcript.upper()
    True
    """
    if keyword not in KEYWORDS:
        raise ValueError(f"keyword must be one of {KEYWORDS}, got {keyword!r}")
    if template not in TEMPLATES:
        raise ValueError(
            f"template must be one of {tuple(TEMPLATES)}, got {template!r}"
        )
    kind, sampler = TEMPLATES[template]
    while True:
        words = sampler(rng, keyword)
        if MIN_WORDS <= len(words) <= MAX_WORDS:
            return Sentence(tuple(words), keyword, template, kind)


def balanced_cycle(labels, count, offset=0):
    """Repeat ``labels`` cyclically, starting at position ``offset``.

    Consecutive calls with ``offset`` advanced by ``count`` give label
    counts that never differ by more than one over all calls together,
    and by at most one within each call.

    Arguments
    ---------
    labels : sequence
        The labels to balance.
    count : int
        How many to return.
    offset : int
        Index of the first label.

    Returns
    -------
    list
        ``count`` labels.

    Example
    -------
    >>> balanced_cycle("abc", 4, offset=2)
    ['c', 'a', 'b', 'c']
    """
    return [labels[(offset + index) % len(labels)] for index in range(count)]


def sample_sentences(rng, count, offset=0):
    """Draw ``count`` sentences with balanced keywords and templates.

    Arguments
    ---------
    rng : random.Random
        Source of randomness.
    count : int
        Number of sentences.
    offset : int
        Position in the keyword and template cycles (see
        ``balanced_cycle``), so that several groups balance together.

    Returns
    -------
    list of Sentence
        The sentences, in random order.

    Example
    -------
    >>> import random
    >>> sentences = sample_sentences(random.Random(0), 20)
    >>> sorted({s.words.count(s.keyword) for s in sentences})
    [1]
    >>> sorted(sum(s.keyword == k for s in sentences) for k in KEYWORDS)[0]
    2
    """
    keywords = balanced_cycle(KEYWORDS, count, offset)
    templates = balanced_cycle(tuple(TEMPLATES), count, offset)
    rng.shuffle(keywords)
    rng.shuffle(templates)
    return [
        sample_sentence(rng, keyword, template)
        for keyword, template in zip(keywords, templates)
    ]
