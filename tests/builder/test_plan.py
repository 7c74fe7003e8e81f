"""Planning: which stages a build needs, in what order, with which global ARGs."""
import pytest

import grammar
from builder.errors import BuildError
from builder.plan import plan
from grammar.errors import DockerfileError


def make(text, build_args=None, target=None):
    return plan(grammar.parse(text), build_args or {}, target)


MULTI = """\
ARG BASE=busybox
FROM ${BASE} AS deps
RUN echo deps
FROM scratch AS unused
COPY x /x
FROM deps AS build
RUN echo build
FROM busybox AS final
COPY --from=build /a /a
COPY --from=0 /b /b
"""


def test_target_prunes_unneeded_stages_and_orders_dependencies_first():
    p = make(MULTI)
    names = [p.stages[i].name for i in p.order]
    assert names == ["deps", "build", "final"]  # "unused" is never built
    assert p.stages[p.target].name == "final"


def test_target_flag_selects_an_earlier_stage():
    p = make(MULTI, target="build")
    assert [p.stages[i].name for i in p.order] == ["deps", "build"]


def test_unknown_target_suggests_the_nearest_stage():
    with pytest.raises(BuildError, match=r'target stage "biuld" could not be found \(did you mean build\?\)'):
        make(MULTI, target="biuld")


def test_meta_arg_expands_in_from_and_build_arg_overrides_it():
    assert make(MULTI).stages[0].base == "busybox"
    assert make(MULTI, {"BASE": "alpine:3"}).stages[0].base == "alpine:3"


def test_from_a_stage_name_links_the_base_stage():
    p = make(MULTI)
    assert p.stages[2].base_stage == 0
    assert p.stages[3].deps == {0, 2}


def test_copy_from_a_later_stage_is_an_error_with_the_line():
    text = "FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\n"
    with pytest.raises(DockerfileError) as e:
        make(text)
    assert e.value.line == 2
    assert "needs to be defined before" in str(e.value)


def test_copy_from_with_a_variable_is_rejected():
    with pytest.raises(DockerfileError, match="variable expansion is not supported for --from"):
        make("FROM busybox\nARG S=a\nCOPY --from=$S /x /x\n")


def test_instruction_before_from_is_an_error():
    with pytest.raises(DockerfileError) as e:
        make("RUN true\nFROM busybox\n")
    assert e.value.line == 1


def test_builtin_platform_args_are_global():
    p = make("FROM busybox\n")
    assert p.global_args["TARGETOS"] == "linux"
    assert p.global_args["TARGETPLATFORM"].startswith("linux/")
