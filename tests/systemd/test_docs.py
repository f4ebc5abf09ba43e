# SPDX-License-Identifier: Apache-2.0
"""The man pages (man/*.scd, built with scdoc as man/meson.build builds them) and the shell completions.

  - every page builds with scdoc without a message, renders with man(1) without a groff warning, and is
    found by its name (and section) in a man tree;
  - every option a binary's --help prints is on its page; every verb of ztnactl's verb table is on
    ztnactl(1); every key of the configuration parsers' tables is documented in its section of the
    configuration page, and every key a configuration page documents exists;
  - the bash, zsh and fish completions load and complete the commands (zsh and fish: where installed).

The binaries come from $ZTNA_BUILD_DIR (default: build/ in the source tree); the tests that run them skip
when they are not built.

Run with Debian's pytest: /usr/bin/python3 -m pytest tests/systemd/test_docs.py
"""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

SRC = pathlib.Path(__file__).resolve().parents[2]
MAN = SRC / "man"
COMPLETIONS = SRC / "completions"
TIMEOUT = 60

# Each binary, where meson builds it, and the page that documents it.
BINARIES = {
    "ztna-controller": ("src/controller/ztna-controller", "ztna-controller.8"),
    "ztna-connector": ("src/connector/ztna-connector", "ztna-connector.8"),
    "ztna-tunneler": ("src/tunneler/ztna-tunneler", "ztna-tunneler.8"),
    "ztnactl": ("src/ztnactl/ztnactl", "ztnactl.1"),
}

# Each D-Bus interface and polkit policy, and the page that documents its methods and actions.
INTERFACES = {
    "org.ztna.Controller1": ("polkit/org.ztna.controller.policy", "ztna-controller.8"),
    "org.ztna.Connector1": ("polkit/org.ztna.policy", "ztna-connector.8"),
    "org.ztna.Tunneler1": ("polkit/org.ztna.policy", "ztna-tunneler.8"),
}

# Each configuration parser and the pages that document its table.
CONFIG_TABLES = {
    "src/controller/controller-conf.c": ("ztna-controller.conf.5",),
    "src/agent/agent-conf.c": ("ztna-connector.conf.5", "ztna-tunneler.conf.5"),
}


def build_dir():
    d = pathlib.Path(os.environ.get("ZTNA_BUILD_DIR") or "build")
    return d if d.is_absolute() else SRC / d


def man_pages():
    """[(page, source)] as man/meson.build lists them."""
    text = (MAN / "meson.build").read_text()
    pages = re.findall(r"\[\s*'([^']+\.[1-8])'\s*,\s*'([^']+\.scd)'\s*\]", text)
    assert pages, "man/meson.build lists no [page, source] pairs"
    return pages


PAGES = man_pages()
PAGE_NAMES = [p for p, _ in PAGES]


def split_page(page):
    """'ztna-connector.conf.5' -> ('ztna-connector.conf', '5')."""
    name, _, section = page.rpartition(".")
    return name, section


def scdoc(page, source):
    """Builds page from source as man/meson.build does: the title line takes the page's name, scdoc, then
    ".nh" after ".TH". Returns (roff, scdoc's stderr, scdoc's exit status)."""
    src_name = source[: -len(".scd")].rpartition(".")[0]
    name, _ = split_page(page)
    lines = (MAN / source).read_text().split("\n")
    lines[0] = lines[0].replace(src_name, name)
    r = subprocess.run(["scdoc"], input="\n".join(lines), capture_output=True, text=True, timeout=TIMEOUT)
    roff = re.sub(r"^(\.TH .*)$", r"\1\n.nh", r.stdout, count=1, flags=re.M)
    return roff, r.stderr, r.returncode


@pytest.fixture(scope="module")
def man_tree(tmp_path_factory):
    """A man tree (root/manN/page) holding every page that builds."""
    if not shutil.which("scdoc"):
        pytest.skip("scdoc is not installed (apt install scdoc)")
    if not shutil.which("man"):
        pytest.skip("man is not installed (apt install man-db)")
    root = tmp_path_factory.mktemp("man")
    for page, source in PAGES:
        roff, _, status = scdoc(page, source)
        if status == 0:
            d = root / f"man{split_page(page)[1]}"
            d.mkdir(exist_ok=True)
            (d / page).write_text(roff)
    return root


def page_path(man_tree, page):
    p = man_tree / f"man{split_page(page)[1]}" / page
    if not p.exists():
        pytest.fail(f"{page} did not build (see test_page_builds)")
    return p


def render(path, width=80):
    """The text man(1) prints for a page file, and its stderr (groff's warnings)."""
    env = dict(os.environ, MANWIDTH=str(width), LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="")
    env.pop("MANPAGER", None)
    env.pop("PAGER", None)
    r = subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True, text=True, env=env,
                       timeout=TIMEOUT)
    assert r.returncode == 0, f"man -l {path.name} failed:\n{r.stderr}"
    return r.stdout, r.stderr


def page_text(man_tree, page):
    """The rendered text of a page, on lines long enough that no option or key is broken."""
    text, _ = render(page_path(man_tree, page), width=1000)
    # Lines still break after an explicit hyphen ("ztna-" / "tunneler"): join them.
    return re.sub(r"-\n\s+", "-", text)


def word_in(word, text):
    return re.search(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", text) is not None


def binary(name):
    path = build_dir() / BINARIES[name][0]
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} is not built (set ZTNA_BUILD_DIR to a build directory)")
    return path


def help_options(name):
    """The long and short options --help prints."""
    r = subprocess.run([binary(name), "--help"], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?![\w-])", r.stdout))
    assert "--help" in options, f"no options found in {name} --help:\n{r.stdout}"
    return options


def ztnactl_verbs():
    """["token create", "status", …] from the verb table of ztnactl.c."""
    text = (SRC / "src/ztnactl/ztnactl.c").read_text()
    m = re.search(r"static const Verb verbs\[\] = \{(.*?)\n\};", text, re.S)
    assert m, "ztnactl.c has no 'static const Verb verbs[]' table"
    verbs = [f"{o} {v}" if v else o
             for o, v in re.findall(r'\{\s*"([a-z-]+)",\s*(?:"([a-z-]+)"|NULL)\s*,', m.group(1))]
    assert len(verbs) > 10, f"too few verbs parsed from ztnactl.c: {verbs}"
    return verbs


def config_keys(parser):
    """{section: {key, …}} from the {section, key, parser, FIELD(…)} items of a configuration parser."""
    text = (SRC / parser).read_text()
    keys = {}
    item = r'\{\s*"(\w+)",\s*"(\w+)",\s*config_parse_\w+,\s*FIELD\(\w+\)\s*\}'
    for section, key in re.findall(item, text):
        keys.setdefault(section, set()).add(key)
    assert keys, f"no configuration table found in {parser}"
    return keys


def documented_keys(text):
    """{section: [key, …]} from the "[SECTION] SECTION OPTIONS" chapters of a rendered configuration page:
    the terms "Key=" each on a line of its own."""
    keys = {}
    for m in re.finditer(r"^\[(\w+)\] SECTION OPTIONS\n(.*?)(?=^\S|\Z)", text, re.M | re.S):
        keys[m.group(1)] = re.findall(r"^\s+(\w+)=\s*$", m.group(2), re.M)
    return keys


# --- man pages ---


def test_every_source_is_built():
    sources = {s for _, s in PAGES}
    on_disk = {p.name for p in MAN.glob("*.scd")}
    assert on_disk - sources == set(), "man/*.scd files that man/meson.build does not build"
    assert sources - on_disk == set(), "man/meson.build builds sources that do not exist"
    assert len(PAGE_NAMES) == len(set(PAGE_NAMES)), "a page is listed twice in man/meson.build"


@pytest.mark.parametrize("page,source", PAGES, ids=PAGE_NAMES)
def test_page_builds(page, source):
    if not shutil.which("scdoc"):
        pytest.skip("scdoc is not installed (apt install scdoc)")
    roff, err, status = scdoc(page, source)
    assert status == 0 and err == "", f"scdoc {source} (for {page}): exit {status}\n{err}"
    name, section = split_page(page)
    assert re.search(rf'^\.TH "{re.escape(name)}" "{section}"', roff, re.M), \
        f"{page}: the title line of {source} does not name {name}({section})"


@pytest.mark.parametrize("page", PAGE_NAMES)
def test_page_renders_without_warnings(man_tree, page):
    text, warnings = render(page_path(man_tree, page))
    assert warnings == "", f"man --warnings -l {page}:\n{warnings}"
    for heading in ("NAME", "DESCRIPTION", "SEE ALSO"):
        assert re.search(rf"^{heading}$", text, re.M), f"{page} has no {heading} section"


@pytest.mark.parametrize("page", PAGE_NAMES)
def test_page_resolves_by_name(man_tree, page):
    """`man NAME` and `man SECTION NAME` find the page: the shared sources give each name a whole page."""
    name, section = split_page(page)
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    for args in ([name], [section, name]):
        r = subprocess.run(["man", "-M", str(man_tree), *args], capture_output=True, text=True, env=env,
                           timeout=TIMEOUT)
        assert r.returncode == 0, f"man {' '.join(args)}: {r.stderr}"
        first = r.stdout.lstrip("\n").split("\n", 1)[0]
        assert first.startswith(f"{name}({section})"), f"man {' '.join(args)} shows '{first}'"


def option_terms(text):
    """The terms of the OPTIONS chapter of a rendered page (and of its subsections): the lines indented
    as a term ("       --confdir=DIR"), not as a description."""
    m = re.search(r"^OPTIONS\n(.*?)(?=^\S|\Z)", text, re.M | re.S)
    assert m, "the page has no OPTIONS section"
    return "\n".join(re.findall(r"^ {7}(\S.*)$", m.group(1), re.M))


@pytest.mark.parametrize("name", BINARIES)
def test_help_options_documented(man_tree, name):
    """Every option of --help is a term of the page's OPTIONS: described, not just mentioned."""
    options = help_options(name)
    terms = option_terms(page_text(man_tree, BINARIES[name][1]))
    missing = sorted(o for o in options if not word_in(o, terms))
    assert missing == [], f"{BINARIES[name][1]} has no entry in OPTIONS for these options of {name} --help"


def test_ztnactl_verbs_documented(man_tree):
    text = page_text(man_tree, "ztnactl.1")
    missing = [v for v in ztnactl_verbs() if not word_in(v, text)]
    assert missing == [], "ztnactl.1 does not document these verbs of ztnactl.c's verb table"


@pytest.mark.parametrize("parser", CONFIG_TABLES)
def test_config_keys_documented(man_tree, parser):
    keys = config_keys(parser)
    for page in CONFIG_TABLES[parser]:
        documented = documented_keys(page_text(man_tree, page))
        missing = sorted(f"[{s}] {k}=" for s, ks in keys.items() for k in ks
                         if k not in documented.get(s.upper(), []))
        assert missing == [], f"{page} does not document these keys in their sections"
        stale = sorted(f"[{s}] {k}=" for s, ks in documented.items() for k in ks
                       if k not in {k for t, kk in keys.items() if t.upper() == s for k in kk})
        assert stale == [], f"{page} documents keys that {parser} does not parse"
        twice = sorted(f"[{s}] {k}=" for s, ks in documented.items() for k in set(ks) if ks.count(k) > 1)
        assert twice == [], f"{page} documents a key twice in one section"


@pytest.mark.parametrize("interface", INTERFACES)
def test_bus_interface_documented(man_tree, interface):
    """Every method of the interface and every polkit action of its policy are on the daemon's page, and
    the page names no action that does not exist; ztna.systemd(7) lists the actions too."""
    policy, page = INTERFACES[interface]
    xml = (SRC / "dbus" / f"{interface}.xml").read_text()
    body = xml[xml.index(f'<interface name="{interface}">'):]
    methods = re.findall(r'<method name="(\w+)"', body[:body.index("</interface>")])
    actions = set(re.findall(r'<action id="([\w.-]+)"', (SRC / policy).read_text()))
    assert methods and actions
    text = page_text(man_tree, page)
    missing = [m for m in methods if not word_in(m, text)]
    assert missing == [], f"{page} does not document these methods of {interface}"
    mentioned = set(re.findall(r"(?<![\w-])(org\.ztna\.(?:controller|agent)\.[a-z-]+)", text))
    assert mentioned == actions, f"{page} and {policy} name different polkit actions"
    overview = page_text(man_tree, "ztna.systemd.7")
    missing = sorted(a for a in actions if not word_in(a, overview))
    assert missing == [], f"ztna.systemd.7 does not list these polkit actions of {policy}"


# --- completions ---


def bash_complete(file, function, words):
    """COMPREPLY of a bash completion function for COMP_WORDS=words (the last one is being completed)."""
    script = ('compopt() { :; }\n'  # only valid inside a real completion
              f'source "{file}" || exit 1\n'
              'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}\n'
              f'{function} || exit 1\n'
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script, "bash", *words], capture_output=True,
                       text=True, timeout=TIMEOUT, cwd=SRC)
    assert r.returncode == 0 and r.stderr == "", f"{file.name} {words}: {r.stderr}"
    return set(r.stdout.split())


@pytest.mark.parametrize("file", sorted((COMPLETIONS / "bash").iterdir()), ids=lambda p: p.name)
def test_bash_completion_loads(file):
    r = subprocess.run(["bash", "-n", str(file)], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    script = 'source "$1" && complete -p "$2"'
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script, "bash", str(file), file.name],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0 and file.name in r.stdout, f"{file.name} registers no completion: {r.stderr}"


def test_bash_completion_ztnactl_verbs():
    objects = {v.split()[0] for v in ztnactl_verbs()}
    assert bash_complete(COMPLETIONS / "bash/ztnactl", "_ztnactl", ["ztnactl", ""]) == objects
    assert bash_complete(COMPLETIONS / "bash/ztnactl", "_ztnactl", ["ztnactl", "token", ""]) == \
        {v.split()[1] for v in ztnactl_verbs() if v.startswith("token ")}
    assert bash_complete(COMPLETIONS / "bash/ztnactl", "_ztnactl", ["ztnactl", "enroll", ""]) == \
        {"connector", "tunneler"}
    assert "--token-file" in bash_complete(COMPLETIONS / "bash/ztnactl", "_ztnactl",
                                           ["ztnactl", "enroll", "connector", "-"])


@pytest.mark.parametrize("name,function,commands", [
    ("ztna-controller", "_ztna_controller", {"init", "run"}),
    ("ztna-connector", "_ztna_agent", {"enroll", "run"}),
    ("ztna-tunneler", "_ztna_agent", {"enroll", "run"}),
])
def test_bash_completion_daemon(name, function, commands):
    file = COMPLETIONS / "bash" / name
    assert bash_complete(file, function, [name, ""]) == commands
    offered = {o.rstrip("=") for o in bash_complete(file, function, [name, "-"])}
    missing = sorted(help_options(name) - offered)
    assert missing == [], f"bash completion of {name} does not offer these options of --help"


ZSH_CAPTURE = r"""
# Prints what zsh's completion offers for the command line "$2" with "$1" in $fpath, one a line
# ("word -- description"): an interactive zsh on a pseudo-terminal, compadd replaced by a printer.
zmodload zsh/zpty
zpty z zsh -f -i
setopt rcquotes
local line
() {
        zpty -w z source $1
        repeat 4; do
                zpty -r z line
                [[ $line == ok* ]] && return
        done
        echo 'zsh did not initialize' >&2
        exit 2
} =( <<< "fpath=($1 \$fpath)
"'
PROMPT=
autoload -U compinit
compinit -u -D
bindkey ''^I'' complete-word
null-line () { echo -E - $''\0'' }
compprefuncs=( null-line )
comppostfuncs=( null-line exit )
zstyle '':completion:*'' list-grouped false
zstyle '':completion:*'' insert-tab false
compadd () {
        if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then
                builtin compadd "$@"
                return $?
        fi
        typeset -a __hits
        builtin compadd -A __hits "$@"
        setopt localoptions norcexpandparam extendedglob
        typeset -A apre hpre hsuf asuf
        zparseopts -E P:=apre p:=hpre S:=asuf s:=hsuf
        [[ -n $__hits ]] || return
        for i in {1..$#__hits}; do
                echo -E - $IPREFIX$apre$hpre$__hits[$i]$hsuf$asuf
        done
}
echo ok')
zpty -w z "$2"$'\t'
integer tog=0
while zpty -r z; do :; done | while IFS= read -r line; do
        if [[ $line == *$'\0\r' ]]; then
                (( tog++ )) && return 0 || continue
        fi
        (( tog )) && echo -E - $line
done
return 2
"""


def zsh_complete(tmp_path, line):
    script = tmp_path / "capture.zsh"
    script.write_text(ZSH_CAPTURE)
    r = subprocess.run(["zsh", "-f", str(script), str(COMPLETIONS / "zsh"), line], capture_output=True,
                       text=True, timeout=TIMEOUT, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"zsh completion of '{line}': exit {r.returncode}\n{r.stderr}"
    return {w.strip("\r") for w in r.stdout.split()}


@pytest.mark.parametrize("file", sorted((COMPLETIONS / "zsh").iterdir()), ids=lambda p: p.name)
def test_zsh_completion_parses(file):
    if not shutil.which("zsh"):
        pytest.skip("zsh is not installed (apt install zsh)")
    r = subprocess.run(["zsh", "-n", str(file)], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert file.read_text().startswith(f"#compdef {file.name[1:]}\n"), f"{file.name}: no #compdef line"


@pytest.mark.parametrize("line,expected", [
    pytest.param("ztnactl ", None, id="ztnactl"),
    pytest.param("ztnactl enroll ", {"connector", "tunneler"}, id="ztnactl-enroll"),
    pytest.param("ztna-controller ", {"init", "run"}, id="ztna-controller"),
    pytest.param("ztna-connector ", {"enroll", "run"}, id="ztna-connector"),
    pytest.param("ztna-tunneler run --",
                 {"--help", "--version", "--confdir", "--state-dir", "--kek-file", "--controller",
                  "--health-listen", "--user"},
                 id="ztna-tunneler-run"),
])
def test_zsh_completion(tmp_path, line, expected):
    if not shutil.which("zsh"):
        pytest.skip("zsh is not installed (apt install zsh)")
    if expected is None:
        expected = {v.split()[0] for v in ztnactl_verbs()}
    assert zsh_complete(tmp_path, line) == expected


@pytest.mark.parametrize("file", sorted((COMPLETIONS / "fish").iterdir()), ids=lambda p: p.name)
def test_fish_completion(file):
    if not shutil.which("fish"):
        pytest.skip("fish is not installed (apt install fish)")
    command = file.name[: -len(".fish")]
    expected = {
        "ztnactl": {v.split()[0] for v in ztnactl_verbs()},
        "ztna-controller": {"init", "run"},
        "ztna-connector": {"enroll", "run"},
        "ztna-tunneler": {"enroll", "run"},
    }[command]
    r = subprocess.run(["fish", "--no-config", "-c", f"source {file}; and complete -C '{command} '"],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert {line.split("\t")[0] for line in r.stdout.splitlines()} == expected
