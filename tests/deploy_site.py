"""Deploy a clean copy of the checkout as the host does: Debian's Apache with mod_passenger, on a loopback port.

Used by tests/test_deploy.py. The layout copies a cPanel account: a web root (`public_html/`) that holds public/
with the project's .htaccess (AllowOverride All), and the application root (`app/`, a clean copy of the checkout)
outside it, run by Passenger with a virtual environment's Python as www-data, with its settings in `app/.env`.

One difference from the host: Debian's Passenger refuses PassengerAppRoot in .htaccess ("not allowed here"), where
CloudLinux's Passenger and LiteSpeed accept it. So the Passenger block is lifted out of public/.htaccess into the
virtual host (its placeholders replaced) and the rest of the file stays in the web root, where Apache reads it.

Everything lives in one temporary folder: the configuration is self-contained (nothing under /etc/apache2 is
changed) and Apache runs in the foreground as a child of the tests.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

APACHE = Path("/usr/sbin/apache2")
MODULES_DIR = Path("/usr/lib/apache2/modules")
PASSENGER_MODULE = MODULES_DIR / "mod_passenger.so"
# Debian's /etc/apache2/mods-available/passenger.conf says these two.
PASSENGER_ROOT = Path("/usr/lib/ruby/vendor_ruby/phusion_passenger/locations.ini")
PASSENGER_RUBY = Path("/usr/bin/ruby")
SYSTEM_PYTHON = Path("/usr/bin/python3")
RUN_USER = "www-data"

BLOCK_BEGIN = "# BEGIN Passenger (images-in-bulk)"
BLOCK_END = "# END Passenger (images-in-bulk)"
APP_ROOT_PLACEHOLDER = "/home/CPANEL_USER/images-in-bulk"
PYTHON_PLACEHOLDER = "/home/CPANEL_USER/virtualenv/images-in-bulk/3.11/bin/python"

# The virtual environments the web server runs, one per requirements.txt, kept between runs (CI reuses them).
VENV_CACHE = Path(os.environ.get("IIB_DEPLOY_VENV_CACHE", "/var/cache"))
VENV_PREFIX = "iib-deploy-venv-"

# What a Debian or cPanel Apache has loaded, minus what the site cannot use (status, CGI, negotiation...).
MODULES = [("mpm_event", "mod_mpm_event.so"), ("authn_core", "mod_authn_core.so"),
           ("authz_core", "mod_authz_core.so"), ("authz_host", "mod_authz_host.so"),
           ("access_compat", "mod_access_compat.so"), ("alias", "mod_alias.so"), ("dir", "mod_dir.so"),
           ("autoindex", "mod_autoindex.so"), ("mime", "mod_mime.so"), ("env", "mod_env.so"),
           ("setenvif", "mod_setenvif.so"), ("filter", "mod_filter.so"), ("deflate", "mod_deflate.so"),
           ("headers", "mod_headers.so"), ("expires", "mod_expires.so"), ("rewrite", "mod_rewrite.so"),
           ("passenger", "mod_passenger.so")]

# The cron entry's environment: next to nothing, so the settings can only come from the private file.
CRON_ENV = {"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "HOME": "/var/www", "LOGNAME": RUN_USER, "LANG": "C.UTF-8"}


class DeployError(Exception):
    """The site could not be deployed; the message says where it stopped (and what the logs said)."""


def missing_requirement() -> str | None:
    """Why this machine cannot run the deploy test (no Apache, no Passenger, not root...), or None."""
    if not APACHE.exists():
        return f"Apache is not installed ({APACHE}; apt-get install -y apache2)"
    if not PASSENGER_MODULE.exists() or not PASSENGER_ROOT.exists():
        return f"Passenger is not installed ({PASSENGER_MODULE}; apt-get install -y libapache2-mod-passenger)"
    if os.geteuid() != 0:
        return "the deploy test runs Apache as www-data and must start as root"
    try:
        pwd.getpwnam(RUN_USER)
    except KeyError:
        return f"there is no {RUN_USER} user"
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} is missing"
    return None


def split_passenger_block(text: str) -> tuple[str, str]:
    """Split .htaccess into (the rest, the Passenger block's directives); exactly one block must be there."""
    lines = text.splitlines()
    begins = [i for i, line in enumerate(lines) if line.strip() == BLOCK_BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == BLOCK_END]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise DeployError(f"public/.htaccess must hold exactly one block from {BLOCK_BEGIN!r} to {BLOCK_END!r} "
                          f"(found {len(begins)} BEGIN and {len(ends)} END lines)")
    block = lines[begins[0] + 1:ends[0]]
    rest = lines[:begins[0]] + lines[ends[0] + 1:]
    return "\n".join(rest) + "\n", "\n".join(line.strip() for line in block if line.strip()) + "\n"


def fill_placeholders(block: str, app_root: Path, python: Path) -> str:
    """The Passenger block with the host's placeholder paths replaced by this deployment's."""
    for placeholder in (APP_ROOT_PLACEHOLDER, PYTHON_PLACEHOLDER):
        if placeholder not in block:
            raise DeployError(f"the Passenger block in public/.htaccess does not mention {placeholder}:\n{block}")
    return block.replace(PYTHON_PLACEHOLDER, str(python)).replace(APP_ROOT_PLACEHOLDER, str(app_root))


def checkout_files(root: Path) -> list[str]:
    """The checkout's files as git sees them: tracked and new (not ignored) ones, without deleted ones."""
    out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         check=True, capture_output=True).stdout
    names = sorted({name for name in out.decode("utf-8").split("\0") if name})
    return [name for name in names if (root / name).is_file()]


def copy_checkout(root: Path, dest: Path) -> int:
    """Copy the checkout's files (no .venv, var/ content, caches or settings) to dest; return how many."""
    files = checkout_files(root)
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target, follow_symlinks=True)
    return len(files)


def readable_by_all(path: Path) -> None:
    """Let every user read the files and enter the folders under path (as an upload via cPanel leaves them)."""
    for folder, _dirs, files in os.walk(path):
        os.chmod(folder, 0o755)
        for name in files:
            file = Path(folder, name)
            if not file.is_symlink():
                os.chmod(file, (file.stat().st_mode & 0o777) | 0o444)


def chown_tree(path: Path, user: str = RUN_USER) -> None:
    """Give a folder and everything in it to a user (and its group)."""
    entry = pwd.getpwnam(user)
    for folder, _dirs, files in os.walk(path):
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(Path(folder, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def cached_venv(requirements: Path, log=print) -> tuple[Path, bool]:
    """A virtual environment from /usr/bin/python3 with requirements.txt installed: (its python, built now?)."""
    # Built once per requirements file and Python (the folder's name carries their hash) under VENV_CACHE and
    # reused; a lock keeps two test runs from building the same one at once, and a stamp marks a finished build.
    python_id = os.path.realpath(SYSTEM_PYTHON).encode()
    digest = hashlib.sha256(requirements.read_bytes() + b"\0" + python_id).hexdigest()[:16]
    folder = VENV_CACHE / f"{VENV_PREFIX}{digest}"
    python = folder / "bin" / "python"
    stamp = folder / ".complete"
    VENV_CACHE.mkdir(parents=True, exist_ok=True)
    with open(VENV_CACHE / f"{VENV_PREFIX}{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and python.exists():
            return python, False
        shutil.rmtree(folder, ignore_errors=True)
        log(f"deploy: building {folder} (pip install -r requirements.txt)")
        subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(folder)], check=True)
        result = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                 "--no-input", "-r", str(requirements)], capture_output=True, text=True)
        if result.returncode:
            shutil.rmtree(folder, ignore_errors=True)
            raise DeployError(f"pip install -r requirements.txt failed:\n{result.stdout}{result.stderr}")
        readable_by_all(folder)
        stamp.touch()
    for old in VENV_CACHE.glob(f"{VENV_PREFIX}*"):  # environments of earlier requirements files
        if old.is_dir() and old != folder:
            shutil.rmtree(old, ignore_errors=True)
            Path(f"{old}.lock").unlink(missing_ok=True)
    return python, True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def apache_config(base: Path, port: int, docroot: Path, passenger_block: str) -> str:
    """A whole, self-contained Apache configuration for the site (Debian's modules, nothing from /etc/apache2)."""
    loads = "\n".join(f"LoadModule {name}_module {MODULES_DIR / file}" for name, file in MODULES)
    lifted = "\n".join(f"  {line}" for line in passenger_block.splitlines())
    return f"""# Written by tests/deploy_site.py for one deploy test; everything it writes stays under {base}.
ServerRoot "/etc/apache2"
ServerName 127.0.0.1
DefaultRuntimeDir "{base}/run"
PidFile "{base}/run/apache2.pid"
ErrorLog "{base}/logs/error.log"
LogLevel warn
LogFormat "%h %t \\"%r\\" %>s %b %{{ms}}T ms" brief
CustomLog "{base}/logs/access.log" brief
Listen 127.0.0.1:{port}
User {RUN_USER}
Group {RUN_USER}
Timeout 60
KeepAlive On

{loads}

TypesConfig /etc/mime.types
AddDefaultCharset off
DirectoryIndex index.html
AccessFileName .htaccess

# As on any host: nothing outside the web root, and no .htaccess of its own elsewhere. (Debian's own config
# also denies ^\\.ht; it is left out here so that the project's .htaccess has to refuse dotfiles itself.)
<Directory />
  Options FollowSymLinks
  AllowOverride None
  Require all denied
</Directory>

# Debian's mods-available/passenger.conf, then what a machine without network needs.
PassengerRoot "{PASSENGER_ROOT}"
PassengerDefaultRuby "{PASSENGER_RUBY}"
PassengerInstanceRegistryDir "{base}/passenger"
PassengerLogFile "{base}/logs/passenger.log"
PassengerDisableAnonymousTelemetry on
PassengerDisableSecurityUpdateCheck on
# The app's files belong to root (readable by all): Passenger then runs it as its default user.
PassengerDefaultUser {RUN_USER}
PassengerDefaultGroup {RUN_USER}

<VirtualHost 127.0.0.1:{port}>
  ServerName 127.0.0.1
  DocumentRoot "{docroot}"
  <Directory "{docroot}">
    AllowOverride All
    Require all granted
  </Directory>

  # The Passenger block of public/.htaccess, lifted here: Debian's Passenger refuses PassengerAppRoot in .htaccess.
{lifted}
</VirtualHost>
"""


def run_as(user: str, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a shell command line as another user with cron's bare environment, capturing its output."""
    return subprocess.run(["/bin/sh", "-c", command], user=user, group=user, extra_groups=[], env=dict(CRON_ENV),
                          capture_output=True, text=True, timeout=timeout)


def tail(path: Path, lines: int = 60) -> str:
    """The last lines of a text file, or a note that it is missing."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"({path.name}: missing)"
    return "\n".join(text.splitlines()[-lines:])


class Deployment:
    """One deployed site: folders, settings, Apache's configuration and process."""

    def __init__(self, checkout: Path, base: Path | None = None, log=print):
        self.checkout = checkout
        self.base = base or Path(tempfile.mkdtemp(prefix="iib-deploy-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.app_root = self.base / "app"
        self.docroot = self.base / "public_html"
        self.conf = self.base / "apache2.conf"
        # Chosen now: PUBLIC_BASE_URL and the stand-ins' redirect URIs name it before Apache starts.
        self.port = free_port()
        self.python: Path | None = None
        self.venv_built = False
        self.process: subprocess.Popen | None = None
        self.settings: dict[str, str] = {}
        self.log = log

    @property
    def base_url(self) -> str:
        """The site's address, as PUBLIC_BASE_URL says it."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def logs(self) -> Path:
        """The folder of Apache's and Passenger's logs."""
        return self.base / "logs"

    def prepare(self, decoys: dict[str, str] | None = None) -> None:
        """Lay out the app root, the virtual environment and the web root (with decoy files in it)."""
        self.python, self.venv_built = cached_venv(self.checkout / "requirements.txt", self.log)
        count = copy_checkout(self.checkout, self.app_root)
        self.log(f"deploy: copied {count} files to {self.app_root}")
        (self.app_root / "var").mkdir(exist_ok=True)
        readable_by_all(self.app_root)
        chown_tree(self.app_root / "var")  # the app's only writable folder, private as DEPLOY.md makes it
        os.chmod(self.app_root / "var", 0o700)

        htaccess = self.app_root / "public" / ".htaccess"
        if not htaccess.is_file():
            raise DeployError("public/.htaccess is missing from the checkout")
        rest, block = split_passenger_block(htaccess.read_text(encoding="utf-8"))
        self.passenger_block = fill_placeholders(block, self.app_root, self.python)
        shutil.copytree(self.app_root / "public", self.docroot)
        (self.docroot / ".htaccess").write_text(rest, encoding="utf-8")
        for name, content in (decoys or {}).items():
            path = self.docroot / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
        # Readable by Apache's user: a refusal has to come from the rules, not from the file's mode.
        readable_by_all(self.docroot)
        for folder in ("run", "logs", "passenger"):
            (self.base / folder).mkdir(exist_ok=True)

    def write_settings(self, settings: dict[str, str]) -> Path:
        """Write the private settings file app/.env (mode 0600, owned by www-data)."""
        for key, value in settings.items():
            if "\n" in str(value) or not key.isupper():
                raise DeployError(f"setting {key} cannot go into a .env line")
        path = self.app_root / ".env"
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as file:
            file.write("".join(f"{key}={value}\n" for key, value in settings.items()))
        os.chmod(path, 0o600)
        os.chown(path, *_ids(RUN_USER))
        self.settings = dict(settings)
        return path

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run `cd <app root> && <venv python> cli.py ARGS` as www-data: what cron and the operator type."""
        return run_as(RUN_USER, self.cron_line(*args), timeout=timeout)

    def cron_line(self, *args: str) -> str:
        """The command line cron runs for a cli.py command."""
        return f"cd {shlex.quote(str(self.app_root))} && {shlex.quote(str(self.python))} cli.py " + \
            " ".join(shlex.quote(a) for a in args)

    def start(self, timeout: float = 30) -> None:
        """Write the configuration, check it, start Apache in the foreground and wait until it answers."""
        self.conf.write_text(apache_config(self.base, self.port, self.docroot, self.passenger_block), encoding="utf-8")
        check = subprocess.run([str(APACHE), "-f", str(self.conf), "-t"], capture_output=True, text=True,
                               env=_server_env())
        if check.returncode:
            raise DeployError(f"apache2 -t refused the configuration:\n{check.stdout}{check.stderr}")
        with open(self.logs / "apache2.out", "ab") as out:
            self.process = subprocess.Popen([str(APACHE), "-f", str(self.conf), "-DFOREGROUND"], stdout=out,
                                            stderr=subprocess.STDOUT, env=_server_env(), start_new_session=True)
        if not self._wait_for_port(timeout):
            self.stop()
            raise DeployError(f"Apache did not start on port {self.port}:\n{self.diagnostics()}")

    def _wait_for_port(self, timeout: float) -> bool:
        """Wait until Apache accepts connections on the port (False if it exits or time runs out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.1)
        return False

    def stop(self) -> list[str]:
        """Stop Apache (and with it Passenger and the app); kill whatever outlived it; return what had to be killed."""
        watched = self.processes()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # what `apache2 -k stop` sends
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while True:
            table = _process_table()
            alive = {pid: name for pid, name in {**watched, **self.processes()}.items()
                     if pid in table and table[pid][1] != "Z" and table[pid][2] == name[0]}
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return [f"{pid} {name[1]}" for pid, name in alive.items()]

    def processes(self) -> dict[int, tuple[str, str]]:
        """Live processes of this deployment (Apache's tree, anything working in its folder): pid -> (start, args)."""
        table = _process_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _state, _start) in table.items():
            children.setdefault(ppid, []).append(pid)
        found = set()
        todo = [self.process.pid] if self.process is not None and self.process.pid in table else []
        while todo:
            pid = todo.pop()
            found.add(pid)
            todo.extend(children.get(pid, []))
        for pid in table:
            try:
                if os.readlink(f"/proc/{pid}/cwd").startswith(str(self.base) + "/"):
                    found.add(pid)
            except OSError:
                continue
        result = {}
        for pid in sorted(found):
            if table[pid][1] == "Z" or pid == os.getpid():
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            result[pid] = (table[pid][2], cmdline.strip()[:120])
        return result

    def diagnostics(self) -> str:
        """The tails of Apache's error log, Passenger's log and the app's own log, for a failure message."""
        parts = [f"--- {self.logs / name}\n{tail(self.logs / name)}"
                 for name in ("error.log", "passenger.log", "apache2.out", "access.log")]
        web_log = self.app_root / "var" / "log" / "web.log"
        if web_log.exists():
            parts.append(f"--- {web_log}\n{tail(web_log)}")
        return "\n".join(parts)

    def remove(self) -> None:
        """Delete the deployment's folder."""
        shutil.rmtree(self.base, ignore_errors=True)


def _ids(user: str) -> tuple[int, int]:
    """A user's uid and gid."""
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def _process_table() -> dict[int, tuple[int, str, str]]:
    """Every process: pid -> (parent pid, state letter, start time in clock ticks)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (command name) "
        table[int(entry.name)] = (int(fields[1]), fields[0], fields[19])
    return table


def _server_env() -> dict[str, str]:
    """Apache's environment: as bare as an init system's, so no setting reaches the app from the test run."""
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
