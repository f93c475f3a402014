"""No secret in any git-tracked file.

``scan_repo`` reads every file ``git ls-files`` lists (skipping binary files) and reports each line
that holds a private key, a cloud or service token, credentials inside a URL
(``scheme://user:password@host``) or a literal value assigned to a password/secret/token key.

The placeholder rule (docs/deploy.md, "Secrets"): a value is *not* a secret when it is empty; a
reference that something else fills in (``${VAR}``, ``$VAR``, ``{{ ... }}``, ``<...>``, ``{env: VAR}``,
``%(var)s``); one of the words PLACEHOLDERS (``changeme``, ``password``, ``pw``, ``true``, ...); or
made only of ``x``, ``*`` or ``.``.  A quoted value counts only when it is the whole right-hand
side, and in Python files only quoted values count (``password=cfg.password`` is an expression,
not a value).  A line that must show a fake
secret (this file's own fixtures, a negative control) carries the marker ``secret-scan: allow``.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ALLOW_MARKER = "secret-scan: allow"
MAX_BYTES = 2_000_000

PLACEHOLDERS = {
    "changeme", "change_me", "change-me", "password", "passwd", "pass", "pw", "secret", "token",
    "example", "placeholder", "redacted", "dummy", "unused", "none", "null", "todo", "user",
    "true", "false", "yes", "no",  # flags such as generatePostgresqlPasswordSecret: false
}

# (name, pattern) for values that are secrets whatever the context
TOKEN_PATTERNS = [
    ("private key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b")),
    ("Google API key", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b")),
    ("GCP service-account key", re.compile(r'"private_key_id"\s*:\s*"[0-9a-f]{40}"')),
    ("GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})\b")),
    ("Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{34,}\b")),
    ("Slack token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b")),
    ("OpenAI/Anthropic-style key", re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{32,}\b")),
    ("Stripe live key", re.compile(r"\b[sr]k_live_[A-Za-z0-9]{20,}\b")),
]
URL_CREDENTIALS = re.compile(r"\b[a-z][a-z0-9+.\-]*://(?P<user>[^\s:/@'\"]+):(?P<pw>[^\s@'\"]*)@")
SECRET_KEY = (r"(?i)(?<![A-Za-z0-9])[\w.\-]*(?:password|passwd|secret|token|api_?key|access_?key"
              r"|private_?key)")
# a quoted value counts only when it is the whole right-hand side ("svc_" + x is an expression)
ASSIGN_QUOTED = re.compile(SECRET_KEY + r"""['"]?\s*[:=]\s*(?P<q>['"])(?P<v>(?:(?!(?P=q)).)*)(?P=q)(?=\s*(?:[,;)\]}#]|$))""")
ASSIGN_BARE = re.compile(SECRET_KEY + r"""['"]?\s*[:=][ \t]*(?P<v>[^\s'"`#,;]*)""")
REFERENCE = re.compile(r"\$\{[^}]*\}")  # ${VAR:?message}: a key inside a reference is not assigned


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    kind: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind}"


def is_placeholder(value: str) -> bool:
    v = value.strip().strip("'\"").strip()
    if not v:
        return True
    if v.startswith(("$", "{{", "<", "%(", "{")):
        return True
    if v.lower() in PLACEHOLDERS:
        return True
    return set(v.lower()) <= set("x*.…")


def scan_text(path: str, text: str) -> list[Finding]:
    findings = []
    is_python = path.endswith(".py")
    for n, line in enumerate(text.splitlines(), 1):
        if ALLOW_MARKER in line:
            continue
        for kind, pattern in TOKEN_PATTERNS:
            if pattern.search(line):
                findings.append(Finding(path, n, kind))
        for m in URL_CREDENTIALS.finditer(line):
            if not is_placeholder(m.group("pw")):
                findings.append(Finding(path, n, "credentials in a URL"))
        unreferenced = REFERENCE.sub("${}", line)
        assignments = list(ASSIGN_QUOTED.finditer(unreferenced))
        if not is_python and not assignments:
            assignments = list(ASSIGN_BARE.finditer(unreferenced))
        for m in assignments:
            if not is_placeholder(m.group("v")) and not URL_CREDENTIALS.search(m.group("v")):
                findings.append(Finding(path, n, "literal value for a secret key"))
    return findings


def tracked_files(repo: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split("\0") if p]


def scan_repo(repo: Path) -> list[Finding]:
    findings = []
    for rel in tracked_files(repo):
        path = repo / rel
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary
            continue
        findings += scan_text(rel, data.decode("utf-8", errors="replace"))
    return findings


# --------------------------------------------------------------------------------------------


def test_no_secrets_in_tracked_files():
    files = tracked_files(REPO)
    assert "docker/.env.example" in files and "docker/docker-compose.yaml" in files
    findings = scan_repo(REPO)
    assert not findings, "secrets in tracked files:\n" + "\n".join(map(str, findings))


PLANTED = {  # each line is a secret the scan must report   secret-scan: allow
    "id_rsa": "-----BEGIN OPENSSH PRIVATE KEY-----",  # secret-scan: allow
    "aws.ini": "aws_access_key_id = AKIAIOSFODNN7EXAMPLX",  # secret-scan: allow
    "gcp.json": '{"type": "service_account", "private_key_id": "' + "0123456789abcdef" * 2 + '01234567"}',
    "ci.yml": "  github_token: ghp_" + "a1B2c3D4e5" * 4,
    "hub.sh": "export HF_TOKEN=hf_" + "AbCdEfGhIj" * 4,
    "db.yaml": "url: postgresql+psycopg2://genbound:Wq8rT2zL9x@db:5432/genbound",  # secret-scan: allow
    ".env": "POSTGRES_PASSWORD=hunter2",  # secret-scan: allow
    "settings.py": 'DB_PASSWORD = "correct horse battery staple"',  # secret-scan: allow
    "values.yaml": "postgresqlPassword: s3cr3t-value",  # secret-scan: allow
}

IGNORED = {  # placeholders and references: the scan must stay quiet
    ".env.example": "POSTGRES_PASSWORD=changeme\nPOSTGRES_USER=genbound\nGENBOUND_PROFILE=\n",
    "compose.yaml": ("      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set it}\n"
                     "  test: ${POSTGRES_PASSWORD:-} and `POSTGRES_PASSWORD=changeme`\n"
                     "  GENBOUND_DATABASE_URL: postgresql+psycopg2://${POSTGRES_USER}:${POSTGRES_PASSWORD}@postgres:5432/g\n"),
    "dagster.yaml": "      password:\n        env: DAGSTER_POSTGRES_PASSWORD\n",
    "values.yaml": 'postgresqlPassword: ""\n  postgresqlSecretName: dagster-postgresql-secret\n',
    "README.md": ("export GENBOUND_DATABASE_URL='postgresql+psycopg2://user:password@host:5432/genbound'\n"
                  "postgresql+psycopg2://user:pw@db:5432/genbound and postgresql://postgres:@/postgres\n"
                  "kubectl create secret generic x --from-literal=postgresql-password=<password>\n"),
    "app.py": ("env['PGPASSWORD'] = pg.password\nrun(password=cfg.password, token=tokenizer(text))\n"
               "max_tokens: int = 3\n"),
    "helm.tpl": "password: {{ .Values.postgresql.postgresqlPassword }}\n",
}


def test_scan_reports_each_planted_secret(tmp_path):
    for name, text in PLANTED.items():
        (tmp_path / name).write_text(text + "\n")
        findings = scan_text(name, (tmp_path / name).read_text())
        assert len(findings) >= 1, f"{name}: planted secret not found"
        assert {f.path for f in findings} == {name} and findings[0].line == 1


def test_scan_ignores_placeholders(tmp_path):
    for name, text in IGNORED.items():
        (tmp_path / name).write_text(text)
        assert scan_text(name, (tmp_path / name).read_text()) == [], name


@pytest.mark.parametrize("value,expected", [
    ("", True), ("changeme", True), ("${POSTGRES_PASSWORD}", True), ("$PGPASSWORD", True),
    ("<password>", True), ("{{ .Values.pw }}", True), ("xxxxxx", True), ("****", True),
    ("hunter2", False), ("Wq8rT2zL9x", False), ("changeme2", False),
])
def test_placeholder_rule(value, expected):
    assert is_placeholder(value) is expected


def test_scan_repo_reads_git_tracked_files_only(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / ".env.example").write_text(IGNORED[".env.example"])
    (tmp_path / "config.yaml").write_text("password: " + "Wq8rT2zL9x\n")
    (tmp_path / "untracked.env").write_text("POSTGRES_PASSWORD=" + "hunter2\n")
    (tmp_path / "blob.bin").write_bytes(b"\0AKIA" + b"IOSFODNN7EXAMPLX")
    git("add", ".env.example", "config.yaml", "blob.bin")
    assert [str(f) for f in scan_repo(tmp_path)] == ["config.yaml:1: literal value for a secret key"]
