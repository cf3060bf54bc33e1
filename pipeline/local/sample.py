"""Deterministic synthetic profiles with teacher-style scores, and the known-researcher seed set.

Used by the demo, the tests and the benchmarks in place of the production database. The same
``seed`` always gives the same rows. Scores follow the archetype of a profile (an associate
professor of neuroscience scores high, a crypto bot near zero) with per-teacher style and noise,
so a model trained on the sample has something real to learn.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import astuple, dataclass, replace

import psycopg2.extensions

from pipeline.dataset import split
from pipeline.dataset.source import DEFAULT_TEACHERS, ensure_schema
from pipeline.errors import InvalidArgument

CLAUDE, GEMINI = DEFAULT_TEACHERS
# Scores by a teacher outside the default allow-list, as production has from experiments.
OTHER_TEACHER = "gpt-4o-mini"
SEED_PROFILE_COUNT = 40
# Seed profiles are fixed, whatever ``seed`` the sample uses, so a seed list stays valid.
SEED_PROFILES_RANDOM_SEED = 20240101
SEED_TWITTER_ID_BASE = 9_000_000_000_000_000
SAMPLE_TWITTER_ID_BASE = 1_000_000_000_000_000
# The demo's database grows between runs as a team's does: a week of newly scored profiles after
# each earlier run (week_of_new_scores), so a second run has fresh profiles to shadow.
NEW_SCORES_TWITTER_ID_BASE = 2_000_000_000_000_000
WEEKLY_NEW_PROFILES = 200
# Rows per COPY batch when loading: bounds the loader's memory for million-row samples.
LOAD_BATCH_ROWS = 20_000
# Share of profiles whose teacher answer is damaged (junk score, empty reason, duplicate handle),
# as real LLM-scored tables have; the export must count and reject them.
DEFAULT_DIRTY_FRACTION = 0.01
SCORED_AT_END = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)

FIRST_NAMES = [
    "Jane",
    "Ahmed",
    "Mei",
    "Carlos",
    "Priya",
    "Olusegun",
    "Anna",
    "Kenji",
    "Fatima",
    "Lukas",
    "Sofia",
    "Dmitri",
    "Aisha",
    "Mateo",
    "Yuki",
    "Noor",
    "Elena",
    "Kwame",
    "Ingrid",
    "Ravi",
    "Chloé",
    "Tomasz",
    "Leila",
    "Diego",
    "Hannah",
    "Wei",
    "Amara",
    "Jonas",
    "Isabel",
    "Arjun",
]
LAST_NAMES = [
    "Smith",
    "Khan",
    "Chen",
    "García",
    "Patel",
    "Adeyemi",
    "Müller",
    "Tanaka",
    "Haddad",
    "Novak",
    "Rossi",
    "Ivanova",
    "Okafor",
    "López",
    "Sato",
    "Rahman",
    "Popescu",
    "Mensah",
    "Larsen",
    "Iyer",
    "Dubois",
    "Kowalski",
    "Nasser",
    "Fernández",
    "Cohen",
    "Zhang",
    "Nwosu",
    "Berg",
    "Silva",
    "Rao",
]
FIELDS = [
    "neuroscience",
    "machine learning",
    "computational biology",
    "economics",
    "climate science",
    "history",
    "linguistics",
    "particle physics",
    "organic chemistry",
    "epidemiology",
    "sociology",
    "number theory",
    "ecology",
    "materials science",
    "public health",
    "philosophy of mind",
    "astrophysics",
    "cognitive psychology",
    "immunology",
    "political science",
]
INSTITUTIONS = [
    "MIT",
    "Stanford",
    "University of Oxford",
    "ETH Zürich",
    "University of Tokyo",
    "McGill",
    "University of Cape Town",
    "TU Delft",
    "UCL",
    "Universidad de Buenos Aires",
    "IISc Bangalore",
    "University of Melbourne",
    "Karolinska Institutet",
    "Sorbonne Université",
    "UC Berkeley",
    "University of Nairobi",
    "KAIST",
    "Max Planck Institute",
    "University of Toronto",
    "EPFL",
]
CITIES = [
    "Boston, MA",
    "London",
    "Zürich",
    "Tokyo",
    "Montréal",
    "Cape Town",
    "Delft",
    "Buenos Aires",
    "Bangalore",
    "Melbourne",
    "Stockholm",
    "Paris",
    "Berkeley, CA",
    "Nairobi",
    "Seoul",
    "Berlin",
    "Toronto",
    "Lausanne",
    "São Paulo",
    "Tel Aviv",
    "Cairo",
    "",
    "🌍",
    "somewhere on the internet",
]
SENIORITY = [
    ("PhD candidate", 0.80),
    ("Postdoc", 0.88),
    ("Assistant Professor", 0.93),
    ("Associate Professor", 0.95),
    ("Professor", 0.96),
    ("Research Fellow", 0.90),
    ("Lecturer", 0.88),
    ("Lab head", 0.95),
]
COMPANIES = ["DeepMind", "Microsoft Research", "Genentech", "IBM Research", "Meta AI", "Novartis", "Bell Labs"]
EMOJI = ["🧠", "🔬", "📚", "🧬", "🌱", "🎓", "☕", "🚀", "✨", "🏳️‍🌈", "👩‍🔬", "📈"]
NON_ENGLISH_BIOS = [
    ("es", "Profesora de {field_es} en la Universidad de Buenos Aires. Investigo {topic_es}.", 0.92),
    ("de", "Doktorand am Max-Planck-Institut. Forschung zu {field_de}.", 0.85),
    ("fr", "Maître de conférences en {field_fr} à Sorbonne Université. Avis personnels.", 0.93),
    ("ja", "東京大学 {field_ja} 准教授。研究と論文について呟きます。", 0.92),
    ("zh", "清华大学{field_zh}博士后，研究方向：{field_zh}。", 0.88),
    ("ar", "أستاذة مساعدة في {field_ar} بجامعة القاهرة. أبحاث ومنشورات.", 0.90),
    ("he", "חוקרת ב{field_he} באוניברסיטת תל אביב. מאמרים ונתונים.", 0.88),
    ("pt", "Pesquisador em {field_pt} na USP. Opiniões próprias.", 0.87),
]
FOREIGN_FIELDS = {
    "field_es": ["neurociencia", "economía", "ecología"],
    "topic_es": ["memoria", "desigualdad", "bosques"],
    "field_de": ["Quantenoptik", "Immunologie", "Linguistik"],
    "field_fr": ["sociologie", "histoire", "chimie"],
    "field_ja": ["物理学", "神経科学", "経済学"],
    "field_zh": ["计算生物学", "材料科学", "机器学习"],
    "field_ar": ["علم الأوبئة", "الكيمياء", "الفيزياء"],
    "field_he": ["מדעי המוח", "כלכלה", "ביולוגיה"],
    "field_pt": ["ecologia", "física", "saúde pública"],
}


@dataclass(frozen=True)
class ProfileRow:
    twitter_id: str
    username: str
    display_name: str | None
    bio: str | None
    likely_is: str | None
    category: str | None
    created_at: dt.datetime | None
    follower_count: int | None
    location: str | None


@dataclass(frozen=True)
class ScoreRow:
    twitter_id: str
    score: str | None
    reason: str | None
    scored_by: str
    scored_at: dt.datetime


@dataclass(frozen=True)
class Archetype:
    """A kind of account: how to write its bio and what a careful teacher would score it."""

    name: str
    weight: float
    likely_is: str
    category: str | None
    make: Callable[[random.Random, str, str], tuple[str, str, float, str]]  # -> display, bio, score, reason
    followers_median: int


def _pick(rng: random.Random, items):
    return items[rng.randrange(len(items))]


def _maybe_emoji(rng: random.Random, text: str) -> str:
    return f"{text} {_pick(rng, EMOJI)}" if rng.random() < 0.3 else text


def _academic(rng, first, last):
    title, base = _pick(rng, SENIORITY)
    field, place = _pick(rng, FIELDS), _pick(rng, INSTITUTIONS)
    prefix = "Dr. " if title not in ("PhD candidate",) and rng.random() < 0.4 else ""
    extras = ["Views my own.", "PI of the {f} lab.", "Papers: scholar.google.com", "She/her.", "Teaching + research."]
    bio = _maybe_emoji(rng, f"{title} in {field} at {place}. {_pick(rng, extras).format(f=field.split()[0].title())}")
    reason = f"{title} in {field} at {place}; bio states an academic position and research focus."
    return f"{prefix}{first} {last}", bio, base, reason


def _industry_researcher(rng, first, last):
    company, field = _pick(rng, COMPANIES), _pick(rng, FIELDS)
    bio = _maybe_emoji(rng, f"Research scientist at {company} working on {field}. Ex-academic, still publishing.")
    return f"{first} {last}", bio, 0.68, f"Industry research scientist at {company} who publishes; researcher, not faculty."


def _student(rng, first, last):
    field = _pick(rng, FIELDS)
    bio = _maybe_emoji(rng, f"Undergrad studying {field} @ {_pick(rng, INSTITUTIONS)}. Coffee and problem sets.")
    return f"{first}", bio, 0.35, "Undergraduate student; interested in research but not a researcher yet."


def _journalist(rng, first, last):
    outlet = _pick(rng, ["The Guardian", "Nature News", "Wired", "a local paper", "STAT"])
    bio = _maybe_emoji(rng, f"Science journalist at {outlet}. I write about {_pick(rng, FIELDS)}. DMs open for tips.")
    return f"{first} {last}", bio, 0.22, f"Journalist at {outlet} covering science; reports on research rather than doing it."


def _company(rng, first, last):
    name = f"{_pick(rng, ['Neuro', 'Bio', 'Quantum', 'Data', 'Green'])}{_pick(rng, ['Labs', 'Works', 'AI', 'Tech'])}"
    bio = f"Official account of {name}. Building the future of {_pick(rng, FIELDS)}. Support: help@{name.lower()}.com"
    return name, bio, 0.04, f"Corporate account of {name}; not a person."


def _bot(rng, first, last):
    bio = _pick(
        rng,
        [
            "🚀🚀 100x gem 🚀🚀 DM for signals 💰💰 #crypto #airdrop",
            "Follow back 100% 🔥 free followers at bit.ly/xxxx",
            "Best deals every day!!! Click the link ⬇️⬇️⬇️",
            "I post random quotes every hour. Automated account.",
        ],
    )
    return f"{first}{rng.randrange(1000, 9999)}", bio, 0.01, "Spam or automated account; no sign of a real person or research."


def _empty(rng, first, last):
    return (
        (None if rng.random() < 0.5 else first),
        (None if rng.random() < 0.5 else ""),
        0.08,
        "Empty profile; no information to suggest a researcher.",
    )


def _public(rng, first, last):
    bio = _maybe_emoji(
        rng,
        _pick(
            rng,
            [
                "Dad, runner, Arsenal fan.",
                "Love hiking and photography 📷",
                "Marketing manager. Opinions are mine.",
                "Reading about science for fun. Not a scientist.",
                "Teacher of 4th grade. Books and cats.",
            ],
        ),
    )
    return f"{first} {last}", bio, 0.07, "Member of the public; bio shows no research role."


def _clinician(rng, first, last):
    specialty = _pick(rng, ["cardiology", "pediatrics", "oncology", "emergency medicine"])
    bio = _maybe_emoji(rng, f"MD, {specialty} at a community hospital. Occasional clinical trials.")
    return f"Dr. {first} {last}", bio, 0.52, f"Physician in {specialty}; some clinical research, primarily clinical practice."


def _non_english_academic(rng, first, last):
    language, template, base = _pick(rng, NON_ENGLISH_BIOS)
    values = {key: _pick(rng, options) for key, options in FOREIGN_FIELDS.items()}
    bio = _maybe_emoji(rng, template.format(**values))
    return f"{first} {last}", bio, base, f"Bio in {language} describes an academic research position."


ARCHETYPES = [
    Archetype("academic", 0.30, "researcher", "academia", _academic, 1800),
    Archetype("industry_researcher", 0.08, "researcher", "industry", _industry_researcher, 2500),
    Archetype("student", 0.08, "student", "academia", _student, 300),
    Archetype("journalist", 0.08, "journalist", "media", _journalist, 5000),
    Archetype("company", 0.07, "organization", "business", _company, 12000),
    Archetype("bot", 0.08, "bot", "spam", _bot, 40),
    Archetype("empty", 0.05, "unknown", None, _empty, 5),
    Archetype("public", 0.14, "person", "general", _public, 200),
    Archetype("clinician", 0.05, "clinician", "health", _clinician, 900),
    Archetype("non_english_academic", 0.07, "researcher", "academia", _non_english_academic, 1200),
]


def _teacher_score(rng: random.Random, base: float, teacher: str) -> float:
    # Claude is a little more decisive than Gemini; both are noisy around the archetype's score.
    if teacher == CLAUDE:
        score = base + rng.gauss(0, 0.04)
    else:
        score = 0.5 + (base - 0.5) * 0.9 + rng.gauss(0, 0.06)
    return min(1.0, max(0.0, score))


def _teacher_reason(teacher: str, reason: str) -> str:
    return reason if teacher == CLAUDE else f"Assessment: {reason[0].lower()}{reason[1:]}"


def _handle(rng: random.Random, first: str, last: str, index: int) -> str:
    ascii_first = first.encode("ascii", "ignore").decode().lower() or "user"
    ascii_last = last.encode("ascii", "ignore").decode().lower() or "x"
    style = rng.randrange(3)
    stem = (f"{ascii_first}_{ascii_last}", f"{ascii_first[0]}{ascii_last}", f"{ascii_first}{ascii_last[:3]}")[style]
    return f"{stem[:10]}{index}"[:15]


def _created_at(rng: random.Random) -> dt.datetime:
    start = dt.datetime(2008, 1, 1, tzinfo=dt.UTC)
    return start + dt.timedelta(days=rng.randrange(365 * 16), seconds=rng.randrange(86400))


def _followers(rng: random.Random, median: int) -> int:
    return max(0, int(rng.lognormvariate(0, 1.2) * median))


def _scores_for(rng: random.Random, twitter_id: str, base: float, reason: str) -> list[ScoreRow]:
    """1 to 3 teacher scores at different times; a few by a teacher outside the allow-list."""
    teachers = [CLAUDE] if rng.random() < 0.55 else [GEMINI]
    if rng.random() < 0.25:
        teachers.append(GEMINI if teachers[0] == CLAUDE else CLAUDE)
    if rng.random() < 0.05:
        teachers.append(OTHER_TEACHER)
    rows = []
    for teacher in teachers:
        scored_at = SCORED_AT_END - dt.timedelta(days=rng.randrange(180), seconds=rng.randrange(86400))
        rows.append(ScoreRow(twitter_id, f"{_teacher_score(rng, base, teacher):.2f}", _teacher_reason(teacher, reason), teacher, scored_at))
    return rows


def _dirty(rng: random.Random, score: ScoreRow, handles: list[str]) -> tuple[ScoreRow, str | None]:
    """Damage one teacher answer the way LLM-scored tables get damaged. Returns (score, stolen handle)."""
    kind = rng.randrange(4)
    if kind == 0:
        return ScoreRow(
            score.twitter_id, _pick(rng, ["abc", "1.7", "-0.2", "high", ""]), score.reason, score.scored_by, score.scored_at
        ), None
    if kind == 1:
        return ScoreRow(score.twitter_id, score.score, _pick(rng, ["", None, "   "]), score.scored_by, score.scored_at), None
    if kind == 2 and handles:
        return score, _pick(rng, handles)
    return ScoreRow(score.twitter_id, f"{float(score.score or 0) * 100:.0f}", score.reason, score.scored_by, score.scored_at), None


def generate_sample(
    profiles: int, seed: int = 0, dirty_fraction: float = DEFAULT_DIRTY_FRACTION
) -> Iterator[tuple[ProfileRow, list[ScoreRow]]]:
    """``profiles`` synthetic profiles with their scores (a few profiles have none)."""
    rng = random.Random(seed)
    weights = [archetype.weight for archetype in ARCHETYPES]
    recent_handles: list[str] = []
    for index in range(profiles):
        archetype = rng.choices(ARCHETYPES, weights)[0]
        first, last = _pick(rng, FIRST_NAMES), _pick(rng, LAST_NAMES)
        display_name, bio, base, reason = archetype.make(rng, first, last)
        twitter_id = str(SAMPLE_TWITTER_ID_BASE + index)
        username = _handle(rng, first, last, index)
        scores = [] if rng.random() < 0.03 else _scores_for(rng, twitter_id, base, reason)
        if scores and rng.random() < dirty_fraction:
            scores[0], stolen = _dirty(rng, scores[0], recent_handles)
            username = stolen or username
        recent_handles = (recent_handles + [username])[-50:]
        profile = ProfileRow(
            twitter_id=twitter_id,
            username=username,
            display_name=display_name,
            bio=bio,
            likely_is=archetype.likely_is,
            category=archetype.category,
            created_at=_created_at(rng),
            follower_count=_followers(rng, archetype.followers_median),
            location=_pick(rng, CITIES) if rng.random() < 0.8 else None,
        )
        yield profile, scores


def week_of_new_scores(week: int, scored_after: dt.datetime) -> Iterator[tuple[ProfileRow, list[ScoreRow]]]:
    """``WEEKLY_NEW_PROFILES`` profiles new to the table, first scored after ``scored_after``: the
    ``week``-th week since the sample. The same ``week`` always gives the same profiles."""
    for index, (profile, scores) in enumerate(generate_sample(WEEKLY_NEW_PROFILES, seed=SEED_PROFILES_RANDOM_SEED + week)):
        twitter_id = str(NEW_SCORES_TWITTER_ID_BASE + week * WEEKLY_NEW_PROFILES + index)
        username = f"{profile.username[:6]}_w{week}_{index}"[:15]  # unique beside the sample's handles
        rescored = [
            replace(score, twitter_id=twitter_id, scored_at=scored_after + dt.timedelta(minutes=1, seconds=position))
            for position, score in enumerate(scores)
        ]
        yield replace(profile, twitter_id=twitter_id, username=username), rescored


def seed_profiles() -> list[tuple[ProfileRow, list[ScoreRow]]]:
    """The known researchers the validation gates score ("Avg score on seeds > 0.75")."""
    rng = random.Random(SEED_PROFILES_RANDOM_SEED)
    rows = []
    for index in range(SEED_PROFILE_COUNT):
        first, last = _pick(rng, FIRST_NAMES), _pick(rng, LAST_NAMES)
        maker = _non_english_academic if index % 5 == 4 else _academic
        display_name, bio, base, reason = maker(rng, first, last)
        twitter_id = str(SEED_TWITTER_ID_BASE + index)
        profile = ProfileRow(
            twitter_id=twitter_id,
            username=f"seed_{_handle(rng, first, last, index)}"[:15],
            display_name=display_name,
            bio=bio,
            likely_is="researcher",
            category="academia",
            created_at=_created_at(rng),
            follower_count=_followers(rng, 2500),
            location=_pick(rng, CITIES[:20]),
        )
        scored_at = SCORED_AT_END - dt.timedelta(days=rng.randrange(30))
        score = ScoreRow(twitter_id, f"{max(0.85, _teacher_score(rng, base, CLAUDE)):.2f}", reason, CLAUDE, scored_at)
        rows.append((profile, [score]))
    return rows


def seed_profile_ids() -> frozenset[str]:
    return frozenset(profile.twitter_id for profile, _ in seed_profiles())


def seed_profile_list() -> str:
    """This sample's seed profiles as a seed-profile list (one twitter_id per line, sorted; the
    format split.read_seed_ids reads): what `python -m pipeline dataset seed-profiles` prints."""
    return "".join(f"{twitter_id}\n" for twitter_id in sorted(seed_profile_ids()))


# NULL in COPY's CSV format is an unquoted empty field; every value is quoted (an empty string too,
# and a text like "\\N" that a NULL marker would swallow). csv.writer cannot leave only None
# unquoted before Python 3.12, so None is written as a text no value can hold (PostgreSQL text
# holds no NUL) and its quoted form is then removed in one pass.
_NONE_MARK = "\x00NULL\x00"


def _copy_rows(conn: psycopg2.extensions.connection, table: str, columns: tuple[str, ...], rows: Iterable[tuple]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_ALL).writerows(tuple(_NONE_MARK if value is None else value for value in row) for row in rows)
    data = io.StringIO(buffer.getvalue().replace(f'"{_NONE_MARK}"', ""))
    with conn.cursor() as cursor:
        cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", data)


PROFILE_COLUMNS = ("twitter_id", "username", "display_name", "bio", "likely_is", "category", "created_at", "follower_count", "location")
SCORE_COLUMNS = ("twitter_id", "score", "reason", "scored_by", "scored_at")


def load(conn: psycopg2.extensions.connection, rows: Iterable[tuple[ProfileRow, list[ScoreRow]]]) -> tuple[int, int]:
    """COPY profiles and scores in batches; returns (profiles, scores) loaded."""
    ensure_schema(conn)
    profile_count = score_count = 0
    profiles: list[tuple] = []
    scores: list[tuple] = []

    def flush() -> None:
        _copy_rows(conn, "user_profiles", PROFILE_COLUMNS, profiles)
        _copy_rows(conn, "profile_scores", SCORE_COLUMNS, scores)
        profiles.clear()
        scores.clear()

    for profile, profile_scores in rows:
        profiles.append(astuple(profile))
        scores.extend(astuple(score) for score in profile_scores)
        profile_count += 1
        score_count += len(profile_scores)
        if len(profiles) >= LOAD_BATCH_ROWS:
            flush()
    flush()
    conn.commit()
    return profile_count, score_count


def load_sample(
    conn: psycopg2.extensions.connection, profiles: int, seed: int = 0, dirty_fraction: float = DEFAULT_DIRTY_FRACTION
) -> tuple[int, int]:
    """Create the tables if absent and load ``profiles`` sample profiles plus the seed profiles."""

    def everything():
        yield from seed_profiles()
        yield from generate_sample(profiles, seed, dirty_fraction)

    return load(conn, everything())


def seed_ids_for(database_url: str | None, seed_profiles_uri: str | None) -> frozenset[str]:
    """The seed profiles of an export: the list at ``seed_profiles_uri``; this sample's own ids only
    when the database is this sample (no URL: the embedded one). A real database without a list is
    an error: these synthetic ids match nobody there, and the seed gates would have nothing to score."""
    if seed_profiles_uri:
        return split.load_seed_ids(seed_profiles_uri)
    if not database_url:
        return seed_profile_ids()
    raise InvalidArgument(
        "a seed-profile list is required with a real database (--seed-profiles FILE|s3://…, or "
        "the stack setting seedProfilesUri): one twitter_id of a known researcher per line"
    )
