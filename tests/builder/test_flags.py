"""builder.flags parses `run` and `create` as docker's pflag does: the forms a user types, the
error lines docker prints, the help; then the same through the CLI."""
from __future__ import annotations

import subprocess
import sys

import pytest

from builder.commands import containers, run
from builder.flags import Command, Flag, FlagError, parse, parse_int, usage

RUN = run.flag_command()


def p(*argv: str):
    return parse(RUN, list(argv))


def error(*argv: str, cmd: Command = RUN) -> str:
    with pytest.raises(FlagError) as e:
        parse(cmd, list(argv))
    return str(e.value)


def test_defaults_are_what_cmd_run_reads():
    a = p("busybox")
    assert (a.image, a.command) == ("busybox", [])
    assert (a.env, a.publish, a.volume, a.label, a.log_opt) == ([], [], [], [], [])
    assert (a.pull, a.tls_verify, a.health_retries, a.stop_timeout, a.restart) == \
        ("missing", True, 0, None, "no")
    assert (a.rm, a.detach, a.tty, a.interactive, a.network, a.name) == \
        (False, False, False, False, None, None)
    assert (a.func, a.failure_exit) == (run.cmd_run, 125)


def test_append_lists_are_not_shared_between_parses():
    p("-e", "A=1", "busybox")
    assert p("busybox").env == []


@pytest.mark.parametrize("argv", [
    ["--name", "x"], ["--name=x"],
])
def test_a_long_flag_takes_the_next_word_or_after_equals(argv):
    assert p(*argv, "busybox").name == "x"


@pytest.mark.parametrize("argv, env", [
    (["-e", "K=V"], ["K=V"]),
    (["-eK=V"], ["K=V"]),
    (["-e=K=V"], ["K=V"]),
    (["--env", "A=1", "-e", "B=2", "--env=C=3"], ["A=1", "B=2", "C=3"]),
])
def test_a_short_flag_takes_the_rest_of_its_word_or_the_next(argv, env):
    assert p(*argv, "busybox").env == env


@pytest.mark.parametrize("group, want", [
    ("-it", {"interactive": True, "tty": True, "detach": False}),
    ("-dit", {"interactive": True, "tty": True, "detach": True}),
    ("-ti", {"interactive": True, "tty": True, "detach": False}),
])
def test_bools_group(group, want):
    a = p(group, "busybox")
    assert {k: getattr(a, k) for k in want} == want


def test_a_value_flag_last_in_a_group_takes_the_rest_or_the_next_word():
    for argv in (["-itp80:80"], ["-itp", "80:80"], ["-itp=80:80"]):
        a = p(*argv, "busybox")
        assert (a.interactive, a.tty, a.publish) == (True, True, ["80:80"]), argv


@pytest.mark.parametrize("word, want", [
    *((w, True) for w in ("1", "t", "T", "TRUE", "true", "True")),
    *((w, False) for w in ("0", "f", "F", "FALSE", "false", "False")),
])
def test_a_bool_takes_go_s_words_after_equals(word, want):
    assert p(f"--rm={word}", "busybox").rm is want
    assert p(f"-d={word}", "busybox").detach is want


def test_a_bool_does_not_take_the_next_word():
    a = p("--rm", "false")
    assert (a.rm, a.image) == (True, "false")


def test_parsing_stops_at_the_first_positional():
    a = p("--rm", "busybox", "ls", "-l", "--rm", "--", "-e")
    assert a.image == "busybox"
    assert a.command == ["ls", "-l", "--rm", "--", "-e"]


def test_double_dash_ends_the_flags():
    a = p("--rm", "--", "-x", "--name", "y")
    assert (a.image, a.command, a.name) == ("-x", ["--name", "y"], None)


def test_a_lone_dash_is_a_positional():
    assert p("-", "x").image == "-"


def test_aliases_and_kinds():
    a = p("--net", "none", "--stop-timeout", "-1", "--health-retries=0x10", "--pull", "never",
          "--tls-verify", "no", "busybox")
    assert (a.network, a.stop_timeout, a.health_retries, a.pull, a.tls_verify) == \
        ("none", -1, 16, "never", False)
    assert p("--tls-verify=TRUE", "busybox").tls_verify is True


@pytest.mark.parametrize("text, want", [
    ("10", 10), ("-1", -1), ("+7", 7), ("0", 0), ("010", 8), ("0o17", 15), ("0b101", 5),
    ("0x1F", 31), ("1_000", 1000), ("0x_1f", 31), ("9223372036854775807", 2**63 - 1),
])
def test_ints_follow_go_s_parseint_base_0(text, want):
    assert parse_int(text) == want


@pytest.mark.parametrize("text", ["", "x", "1.5", " 1", "08", "_1", "1_", "1__0", "0x", "-"])
def test_bad_ints(text):
    with pytest.raises(ValueError, match=r"^strconv\.ParseInt: parsing .*: invalid syntax$"):
        parse_int(text)


@pytest.mark.parametrize("argv, message", [
    (["--foo", "busybox"], "unknown flag: --foo"),
    (["--foo=1", "busybox"], "unknown flag: --foo"),
    (["-z", "busybox"], "unknown shorthand flag: 'z' in -z"),
    (["-dz", "busybox"], "unknown shorthand flag: 'z' in -z"),
    (["-dzi", "busybox"], "unknown shorthand flag: 'z' in -zi"),
    (["--name"], "flag needs an argument: --name"),
    (["-e"], "flag needs an argument: 'e' in -e"),
    (["-de"], "flag needs an argument: 'e' in -e"),
    (["---x", "busybox"], "bad flag syntax: ---x"),
    (["--=x", "busybox"], "bad flag syntax: --=x"),
    (["--stop-timeout", "x", "busybox"],
     'invalid argument "x" for "--stop-timeout" flag: strconv.ParseInt: parsing "x": invalid syntax'),
    (["--health-retries=99999999999999999999", "busybox"],
     'invalid argument "99999999999999999999" for "--health-retries" flag: strconv.ParseInt: '
     'parsing "99999999999999999999": value out of range'),
    (["--rm=yes", "busybox"],
     'invalid argument "yes" for "--rm" flag: strconv.ParseBool: parsing "yes": invalid syntax'),
    (["-d=no", "busybox"],
     'invalid argument "no" for "-d, --detach" flag: strconv.ParseBool: parsing "no": invalid syntax'),
    (["--pull", "sometimes", "busybox"],
     'invalid argument "sometimes" for "--pull" flag: must be one of "always", "missing" or "never"'),
    (["--tls-verify", "maybe", "busybox"],
     "invalid argument \"maybe\" for \"--tls-verify\" flag: expected true or false, not 'maybe'"),
    ([], '"pybuild run" requires at least 1 argument.'),
    (["--rm", "-d"], '"pybuild run" requires at least 1 argument.'),
])
def test_errors_in_docker_s_words(argv, message):
    assert error(*argv) == message


def test_help_before_any_positional_is_required():
    assert p("--help").help is True
    assert p("-d", "--help").help is True
    assert error("--help", "--foo") == "unknown flag: --foo"
    a = p("busybox", "--help")          # the command's own
    assert (a.help, a.command) == (False, ["--help"])


def test_usage_in_docker_s_layout():
    text = usage(RUN, 100)
    lines = text.splitlines()
    assert lines[0] == "Usage:  pybuild run [OPTIONS] IMAGE [COMMAND] [ARG...]"
    assert lines[2].startswith("Run a command in a new container")
    assert "Options:" in lines
    options = lines[lines.index("Options:") + 1:]
    rows = {ln.split()[0].rstrip(","): ln for ln in options if ln.lstrip().startswith("-")}
    assert rows["-e"].startswith("  -e, --env list ")
    assert rows["--rm"].startswith("      --rm   ")
    assert rows["--help"].split()[:2] == ["--help", "Print"]
    assert rows["-h"].startswith("  -h, --hostname string ")
    flat = " ".join(text.split())
    assert '(default "missing")' in flat and "(also --net)" in flat
    # help wraps to the width (a word longer than its column stays whole)
    assert [ln for ln in lines if len(ln) > 100] == [rows["--mount"]]
    longs = [ln.split("--")[1].split()[0] for ln in options if "--" in ln[:12]]
    assert longs == sorted(longs)


def test_create_shares_run_s_table():
    create = containers.flag_command()
    assert create.path == "pybuild create"
    from builder.commands.run import RUN_ONLY
    assert create.flags == tuple(f for f in RUN.flags if f.long not in RUN_ONLY)
    a = parse(create, ["--rm", "-e", "A=1", "busybox", "sh"])
    assert (a.rm, a.env, a.image, a.command, a.func) == (True, ["A=1"], "busybox", ["sh"],
                                                         containers.cmd_create)


def test_a_table_names_each_flag_once():
    with pytest.raises(ValueError, match="--x twice"):
        Command("t", "", "", [Flag("x"), Flag("y", aliases=("x",))])
    with pytest.raises(ValueError, match="-a twice"):
        Command("t", "", "", [Flag("all", short="a"), Flag("any", short="a")])


def test_words_after_the_positionals_without_rest():
    cmd = Command("pybuild t", "X", "", [], positionals=("x",))
    assert error("a", "b", cmd=cmd) == '"pybuild t" accepts at most 1 argument.'


def test_the_parser_and_run_s_table_import_no_re(repo_root):
    code = ("import sys; import builder.commands.run, builder.flags; "
            "print(sorted({'re', 'argparse', 'enum', 'functools'} & set(sys.modules)))")
    r = subprocess.run([sys.executable, "-S", "-c", code], cwd=repo_root, capture_output=True,
                       text=True, check=True)
    assert r.stdout == "[]\n"


# through the CLI, as a user types it

@pytest.mark.parametrize("argv, word", [
    (["run", "--foo", "busybox"], "run"),
    (["--debug", "run", "--foo", "busybox"], "run"),
    (["create", "--foo", "busybox"], "create"),
    (["container", "run", "--foo", "busybox"], "run"),
])
def test_cli_unknown_flag(pybuild, argv, word):
    r = pybuild(*argv)
    assert (r.returncode, r.stdout) == (125, "")
    assert r.stderr == f"pybuild: error: unknown flag: --foo\nSee 'pybuild {word} --help'.\n"


def test_cli_missing_image(pybuild):
    r = pybuild("run", "--rm")
    assert r.returncode == 125
    assert r.stderr == ('pybuild: error: "pybuild run" requires at least 1 argument.\n'
                        "See 'pybuild run --help'.\n")


def test_h_is_the_hostname_as_in_docker_run():
    """docker run's -h is --hostname (help is --help alone); a command without an -h flag of
    its own keeps -h for help."""
    assert p("-h", "box", "busybox").hostname == "box"
    assert p("-dh", "box", "busybox").hostname == "box"
    assert p("-hbox", "busybox").hostname == "box"
    other = Command("pybuild x", "pybuild x", "x", [Flag("all", "bool", short="a")])
    assert parse(other, ["-h"]).help is True


def test_cli_help(pybuild):
    r = pybuild("run", "--help")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.startswith("Usage:  pybuild run [OPTIONS] IMAGE [COMMAND] [ARG...]\n")
    assert "  -e, --env list" in r.stdout


def test_cli_top_level_help_lists_run_and_create(pybuild):
    r = pybuild("--help")
    words = [ln.split()[0] for ln in r.stdout.splitlines() if ln.startswith("    ")]
    assert r.returncode == 0 and {"run", "create"} <= set(words)


def test_cli_the_command_keeps_its_flags(busybox_root, pybuild):
    r = pybuild("run", "--rm", "--network=none", "busybox", "ls", "-l", "-d", "/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("drwx") and r.stdout.rstrip().endswith(" /")   # ls's -l -d


def test_cli_grouped_short_flags(busybox_root, pybuild):
    r = pybuild("--root", str(busybox_root), "run", "--rm=true", "--net", "none", "-ieA=1",
                "busybox", "sh", "-c", "cat; echo $A", input="hi\n")
    assert (r.returncode, r.stdout) == (0, "hi\n1\n"), r.stderr
