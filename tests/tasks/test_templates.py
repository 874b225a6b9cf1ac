"""Templates: strict rendering, precise errors, and no leak of the reference answer."""

from __future__ import annotations

import pytest

from still.tasks import Example, TemplateError, example_id, render, role_context


def ex(text: str, answer: str) -> Example:
    fields = {"text": text}
    return Example(
        id=example_id({**fields, "label": answer}),
        fields=fields,
        answer=answer,
        source="data.jsonl:1",
    )


ASKED = ex("Where is Paris ?", "location")
SHOTS = [ex("Who wrote Hamlet ?", "human"), ex("How many legs has a cat ?", "number")]


def test_render_with_fields_labels_and_fewshot() -> None:
    template = (
        "Labels: {{ labels | join(', ') }}\n"
        "{% for s in fewshot %}Q: {{ s.text }}\nA: {{ s.answer }}\n{% endfor %}"
        "Q: {{ text }}\nA:\n"
    )
    out = render(
        template,
        role_context(ASKED, ["human", "location", "number"], SHOTS),
        name="prompts.teacher.template",
    )
    assert out == (
        "Labels: human, location, number\n"
        "Q: Who wrote Hamlet ?\nA: human\n"
        "Q: How many legs has a cat ?\nA: number\n"
        "Q: Where is Paris ?\nA:"
    )


def test_missing_variable_names_variable_template_line_and_fields() -> None:
    with pytest.raises(TemplateError) as info:
        render(
            "Classify:\n{{ question }}",
            role_context(ASKED, None, []),
            name="prompts.teacher.template",
        )
    msg = str(info.value)
    assert msg.startswith("prompts.teacher.template: 'question' is undefined (line 2)")
    assert "(line 2)" in msg and "available fields: text" in msg


def test_missing_fewshot_attribute_names_it() -> None:
    with pytest.raises(
        TemplateError,
        match=r"prompts\.student\.system.*'question'.*"
        r"few-shot items have: answer, text",
    ):
        render(
            "{% for s in fewshot %}{{ s.question }}{% endfor %}",
            role_context(ASKED, None, SHOTS),
            name="prompts.student.system",
        )


def test_syntax_error_names_template_and_line() -> None:
    with pytest.raises(TemplateError, match=r"prompts\.teacher\.template: syntax error \(line 2\)"):
        render("ok\n{% for x in %}", {}, name="prompts.teacher.template")


def test_reference_answer_is_not_in_role_context() -> None:
    ctx = role_context(ASKED, ["human", "location"], SHOTS)
    assert "answer" not in ctx and "label" not in ctx
    assert "location" not in {v for v in ctx.values() if isinstance(v, str)}
    assert ctx["labels"] == ["human", "location"]
    assert ctx["fewshot"] == [
        {"text": "Who wrote Hamlet ?", "answer": "human"},
        {"text": "How many legs has a cat ?", "answer": "number"},
    ]
    with pytest.raises(TemplateError, match="'answer'"):
        render("{{ answer }}", ctx, name="prompts.teacher.template")


def test_labels_none_without_a_label_set() -> None:
    assert role_context(ASKED, None, [])["labels"] is None


def test_compiled_templates_are_cached() -> None:
    from still.tasks._templates import _compile

    _compile.cache_clear()
    for text in ("a", "b", "a"):
        render("{{ text }}", role_context(ex(text, "x"), None, []), name="t")
    assert _compile.cache_info().hits == 2 and _compile.cache_info().misses == 1


@pytest.mark.parametrize(
    "template",
    [
        "{{ cycler.__init__.__globals__.os.getcwd() }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ text.__class__ }}",
        "{% for s in fewshot %}{{ s.__class__.__init__ }}{% endfor %}",
        "{{ lipsum.__globals__['os'].getcwd() }}",
    ],
)
def test_templates_cannot_reach_python_internals(template: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(template, role_context(ASKED, None, SHOTS), name="prompts.teacher.template")
    msg = str(info.value)
    assert msg.startswith("prompts.teacher.template: refused by the template sandbox: ")
    assert "unsafe" in msg and "\n" not in msg and "/" not in msg  # no cwd leaked


def test_sandbox_keeps_ordinary_template_features() -> None:
    template = (
        "{{ text | upper }} {{ text.lower().split()[0] }} {{ labels | length }} "
        "{{ '%s-%s' | format(*labels) }} {{ fewshot | map(attribute='answer') | join('/') }}"
    )
    out = render(template, role_context(ASKED, ["a", "b"], SHOTS), name="t")
    assert out == "WHERE IS PARIS ? where 2 a-b human/number"
