"""validate(): every mistake a build would hit, reported at its line before any step runs."""

import pytest

import grammar


def check(text, build_args=None):
    grammar.validate(grammar.parse(text), build_args or {})


GOOD = """\
# syntax=docker/dockerfile:1
ARG BASE=alpine:3.19
FROM ${BASE} AS build
ARG V=1
ENV A=1 B="two words" C=${A:-x}
RUN --mount=type=cache,target=/root/.cache,sharing=locked --network=none echo hi
RUN --mount=type=secret,id=tok,required --mount=type=bind,source=.,target=/src,rw true
RUN --mount=type=tmpfs,target=/tmp,size=64m --mount=type=ssh --security=sandbox true
COPY --chown=1000:1000 --chmod=u=rwX,go=rX --link --exclude=*.pyc a b /dst/
COPY --from=build --chmod=0755 /x /y
ADD --checksum=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef \
https://example.com/f /f
ADD --keep-git-dir=true --unpack=false x.tar /opt/
COPY <<EOF /etc/motd
hello ${V}
EOF
HEALTHCHECK --interval=30s --timeout=1m30s --start-period=0s --retries=3 CMD curl -f http://localhost/
EXPOSE 80 443/tcp 53/UDP 8000-8010/udp ${PORT}
STOPSIGNAL SIGTERM
USER app:app
WORKDIR /app
VOLUME ["/data"]
SHELL ["/bin/sh", "-c"]
ONBUILD RUN --network=host echo later
FROM scratch
COPY --from=build /app /app
STOPSIGNAL 9
HEALTHCHECK NONE
"""


def test_a_realistic_dockerfile_is_accepted():
    check(GOOD)


FROM_EXPANSION = ("variable expansion is not supported for --from, define a new stage with FROM using ARG "
                  "from global scope as a workaround")
CHMOD = "invalid chmod parameter: '{}'. it should be octal string and between 0 and 07777"
PORT = 'invalid port "{}" in EXPOSE: use PORT[/PROTO] or START-END[/PROTO] with PROTO tcp, udp or sctp'


@pytest.mark.parametrize(("text", "line", "msg"), [
    ("FROM x\nRUN --netwrk=none true\n", 2, "unknown flag: --netwrk (did you mean --network?)"),
    ("FROM x\nRUN --network=bridge true\n", 2, 'invalid network mode "bridge"'),
    ("FROM x\nRUN --security=root true\n", 2, 'security "root" is not valid'),
    ("FROM x\nRUN --mount=type=cahce,target=/c true\n", 2,
     'unsupported mount type "cahce" (did you mean cache?)'),
    ("FROM x\nRUN --mount=type=bind,target=/a,mode=0700 true\n", 2,
     'mode not allowed for "bind" type mounts'),
    ("FROM x\nRUN --mount=type=secret,id=a,from=b true\n", 2, "secret mount should not have a from"),
    ("FROM x\nRUN --mount=type=cache,target=/c,sharing=some true\n", 2, 'unsupported sharing value "some"'),
    ("FROM x\nRUN --mount=type=cache,target=/c,bogus true\n", 2,
     "invalid field 'bogus' must be a key=value pair"),
    ("FROM x\nRUN --mount=type=bind true\n", 2, "mount type=bind requires a target (target=/path)"),
    ("FROM x\nRUN --mount=type=bind,target=/ true\n", 2, 'invalid mount target "/"'),
    ("FROM x\nRUN --mount=type=bind,target=/a,from=$X true\n", 2, FROM_EXPANSION),
    ('FROM x\nRUN --mount=type=bind,target=/a,\\"src=x\\"y true\n', 2,
     'invalid mount "type=bind,target=/a,\\"src=x\\"y": bad CSV syntax'),
    ("FROM x\nCOPY only\n", 2,
     "COPY requires at least two arguments, but only one was provided. Destination could not be determined"),
    ("FROM x\nCOPY --chmod=888 a b\n", 2, CHMOD.format("888")),
    ("FROM x\nCOPY --chmod=u+q a b\n", 2, CHMOD.format("u+q")),
    ("FROM x\nCOPY --chown= a b\n", 2, "missing a value on flag: --chown"),
    ("FROM x\nCOPY --checksum=sha256:00 a b\n", 2, "unknown flag: --checksum"),
    ("FROM x\nADD --checksum=sha256:00 a b\n", 2, "checksum requires HTTP(S) or Git sources"),
    ("FROM x\nADD --from=a b c\n", 2, "unknown flag: --from"),
    ("FROM x\nCOPY --from=$X a b\n", 2, FROM_EXPANSION),
    ("FROM x\nCOPY --link=maybe a b\n", 2, "expecting boolean value for flag --link, not: maybe"),
    ("FROM x\nCOPY --chown=a --chown=b a b\n", 2, "duplicate flag specified: --chown"),
    ("FROM x\nCOPY https://example.com/x /x\n", 2, "source can't be a URL for COPY"),
    ("FROM x\nCOPY a <<EOF\nEOF\n", 2, "COPY cannot accept a heredoc as a destination"),
    ("FROM x\nHEALTHCHECK --interval=5 CMD true\n", 2,
     'time: missing unit in duration "5" (--interval, e.g. 30s, 1m30s)'),
    ("FROM x\nHEALTHCHECK --timeout=10us CMD true\n", 2, 'Interval "timeout" cannot be less than 1ms'),
    ("FROM x\nHEALTHCHECK --retries=-1 CMD true\n", 2, "--retries cannot be negative (-1)"),
    ("FROM x\nHEALTHCHECK CMD\n", 2, "Missing command after HEALTHCHECK CMD"),
    ("FROM x\nHEALTHCHECK NONE x\n", 2, "HEALTHCHECK NONE takes no arguments"),
    ("FROM x\nHEALTHCHECK CONNECT TCP 7000\n", 2, 'Unknown type "CONNECT" in HEALTHCHECK (try CMD)'),
    ("FROM x\nSTOPSIGNAL SIGTERMM\n", 2, "invalid signal: SIGTERMM (did you mean SIGTERM?)"),
    ("FROM x\nSTOPSIGNAL 99\n", 2, "invalid signal: 99"),
    ("FROM x\nEXPOSE 80/tcpp\n", 2, PORT.format("80/tcpp")),
    ("FROM x\nEXPOSE 70000\n", 2, PORT.format("70000")),
    ("FROM x AS 1st\n", 1,
     'invalid name for build stage: "1st", name can\'t start with a number or contain symbols'),
    ("FROM x AS a\nFROM y AS A\n", 2, 'duplicate stage name "a" (first defined on line 1)'),
    ("FROM x y\n", 1, "FROM requires either one or three arguments"),
    ("FROM x AT y\n", 1, "FROM requires either one or three arguments"),
    ("ARG A\nRUN true\nFROM x\n", 2, "no build stage in current context"),
    ("ARG A\n", 1, "dockerfile contains no stages to build"),
    ("ARG BASE\nFROM ${BASE}\n", 2, "base name (${BASE}) should not be blank"),
    ("FROM x\nENV a=${b\n", 2, """failed to process "${b": syntax error: missing '}'"""),
    ("FROM x\nWORKDIR ${a:=b}\n", 2,
     """failed to process "${a:=b}": unsupported modifier (:=) in substitution"""),
    ("FROM x\nLABEL a=\"b\n", 2,
     """failed to process "\\"b": unexpected end of statement while looking for matching double-quote"""),
    ("FROM x\nUSER\n", 2, "USER requires exactly one argument"),
    ("FROM x\nSHELL /bin/sh -c\n", 2, "SHELL requires the arguments to be in JSON form"),
    ("FROM x\nVOLUME [\"\"]\n", 2, "VOLUME specified can not be an empty string"),
    ("FROM x\nARG =x\n", 2, "ARG names can not be blank"),
    ("FROM x\nONBUILD ONBUILD RUN x\n", 2, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    ("FROM x\nONBUILD FROM y\n", 2, "FROM isn't allowed as an ONBUILD trigger"),
    ("FROM x\nONBUILD COPY --chmod=9 a b\n", 2, CHMOD.format("9")),
    ("FROM x\nWORKDIR --foo /a\n", 2, "unknown flag: --foo"),
    ("FROM x\nENV a=${b#\\q}\n", 2, ('failed to process "${b#\\\\q}": invalid pattern (\\q) in substitution: '
     "invalid escape '\\q'")),
    ("FROM x\n\n\n\nRUN ok\nRUN \\\n  --mount=type=nope,target=/x true\n", 6,
     'unsupported mount type "nope"'),
])
def test_rejected_with_line_and_message(text, line, msg):
    with pytest.raises(grammar.DockerfileError) as e:
        check(text)
    assert (e.value.line, e.value.message) == (line, msg)


def test_build_arg_fills_meta_arg_for_from():
    check("ARG BASE\nFROM ${BASE}\n", {"BASE": "alpine"})
    with pytest.raises(grammar.DockerfileError, match="BASE: required"):
        check("ARG BASE\nFROM ${BASE:?required}\n")


def test_unknown_instruction_is_reported_by_parse_with_hint():
    with pytest.raises(grammar.DockerfileError) as e:
        grammar.parse("FROM x\nCOPPY a b\n")
    assert str(e.value) == "Dockerfile:2: unknown instruction: COPPY (did you mean COPY?)"
    with pytest.raises(grammar.DockerfileError, match="unknown instruction: COPPY"):
        grammar.validate(grammar.parse("FROM x\nCOPPY a b\n", strict=False))
