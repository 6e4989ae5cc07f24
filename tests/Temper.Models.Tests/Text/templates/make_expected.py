#!/usr/bin/env python3
"""Writes expected.json: what Python Jinja2, set up exactly as transformers sets it up, renders for
the published chat templates in this folder and for a set of small feature snippets.

    python3 tests/Temper.Models.Tests/Text/templates/make_expected.py   (needs only jinja2 >= 3.1)

The environment mirrors transformers' _compile_jinja_template / render_jinja_template:
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker,
loopcontrols]), its tojson filter (json.dumps, ensure_ascii=False), raise_exception and strftime_now
globals, and render(messages=..., tools=..., documents=None, add_generation_prompt=..., **kwargs).
"""
import json
import os
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))


class AssistantTracker(Extension):
    """transformers' {% generation %} block; renders its body (mask tracking is not needed here)."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

    @jinja2.pass_eval_context
    def _generation_support(self, context, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return datetime.now().strftime(format)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now


def render(source, messages, add_generation_prompt=False, tools=None, extra=None):
    return env.from_string(source).render(
        messages=messages, tools=tools, documents=None, add_generation_prompt=add_generation_prompt, **(extra or {}))


# ---- conversations ------------------------------------------------------------------------------

SYSTEM = {"role": "system", "content": "You are a concise assistant. "}
USER1 = {"role": "user", "content": "  What's the capital of France?\n"}
ASSISTANT1 = {"role": "assistant", "content": "Paris.  "}
USER2 = {"role": "user", "content": "And of Japan? Ça va? 日本語 🙂"}
ASSISTANT2 = {"role": "assistant", "content": "Tokyo."}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and country, e.g. Paris, France"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
CONVERT_TOOL = {
    "type": "function",
    "function": {
        "name": "convert_température",
        "description": "Convert a temperature \"exactly\"",
        "parameters": {
            "type": "object",
            "properties": {"value": {"type": "number", "default": 1.5, "maximum": 1000, "exclusive": True}},
            "required": [],
        },
        "return": {"type": "number"},
    },
}
TOOLS = [WEATHER_TOOL, CONVERT_TOOL]

USER_WEATHER = {"role": "user", "content": "What's the weather like in Paris today?"}
TOOL_CALL = {
    "role": "assistant",
    "content": "",
    "tool_calls": [{"id": "call12345", "type": "function",
                    "function": {"name": "get_current_weather", "arguments": {"location": "Paris, France", "unit": "celsius"}}}],
}
TOOL_RESPONSE = {"role": "tool", "tool_call_id": "call12345", "name": "get_current_weather",
                 "content": "{\"temperature\": 22.5, \"condition\": \"sunny\"}"}
TOOL_RESPONSE2 = {"role": "tool", "tool_call_id": "call67890", "name": "get_current_weather", "content": "humidity: 40%"}
ASSISTANT_WEATHER = {"role": "assistant", "content": "It is 22.5 °C and sunny in Paris."}

SMOLLM_TOKENS = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>", "pad_token": "<|im_end|>"}
QWEN_TOKENS = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
LLAMA_TOKENS = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
MISTRAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}

CASES = [
    # SmolLM2-135M-Instruct
    ("smollm2-system-turn", "smollm2.jinja", [SYSTEM, USER1, ASSISTANT1], False, None, SMOLLM_TOKENS),
    ("smollm2-default-system-gen", "smollm2.jinja", [USER1], True, None, SMOLLM_TOKENS),
    ("smollm2-multi-turn-gen", "smollm2.jinja", [USER1, ASSISTANT1, USER2], True, None, SMOLLM_TOKENS),
    # Qwen2.5-0.5B-Instruct
    ("qwen2.5-default-system-gen", "qwen2.5.jinja", [USER1], True, None, QWEN_TOKENS),
    ("qwen2.5-multi-turn", "qwen2.5.jinja", [SYSTEM, USER1, ASSISTANT1, USER2, ASSISTANT2], False, None, QWEN_TOKENS),
    ("qwen2.5-tools-gen", "qwen2.5.jinja", [USER_WEATHER], True, TOOLS, QWEN_TOKENS),
    ("qwen2.5-tools-system-call-response", "qwen2.5.jinja",
     [SYSTEM, USER_WEATHER, TOOL_CALL, TOOL_RESPONSE, TOOL_RESPONSE2, ASSISTANT_WEATHER, USER2], True, [WEATHER_TOOL], QWEN_TOKENS),
    # Llama-3.2-1B-Instruct (a fixed date_string keeps it deterministic)
    ("llama3.2-system-gen", "llama3.2.jinja", [SYSTEM, USER1], True, None, {**LLAMA_TOKENS, "date_string": "26 Jul 2024"}),
    ("llama3.2-multi-turn", "llama3.2.jinja", [USER1, ASSISTANT1, USER2, ASSISTANT2], False, None, {**LLAMA_TOKENS, "date_string": "02 Jan 2025"}),
    ("llama3.2-tools-call-response-gen", "llama3.2.jinja",
     [SYSTEM, USER_WEATHER, TOOL_CALL, TOOL_RESPONSE, ASSISTANT_WEATHER, USER2], True, TOOLS, {**LLAMA_TOKENS, "date_string": "26 Jul 2024"}),
    ("llama3.2-tools-in-system", "llama3.2.jinja",
     [USER_WEATHER, TOOL_CALL, TOOL_RESPONSE], True, [WEATHER_TOOL],
     {**LLAMA_TOKENS, "date_string": "26 Jul 2024", "tools_in_user_message": False}),
    ("llama3.2-two-tool-calls-raises", "llama3.2.jinja",
     [USER_WEATHER, {**TOOL_CALL, "tool_calls": TOOL_CALL["tool_calls"] * 2}], False, [WEATHER_TOOL],
     {**LLAMA_TOKENS, "date_string": "26 Jul 2024"}),
    # Mistral-7B-Instruct-v0.3
    ("mistral-v0.3-multi-turn-gen", "mistral-v0.3.jinja", [USER1, ASSISTANT1, USER2], True, None, MISTRAL_TOKENS),
    ("mistral-v0.3-system", "mistral-v0.3.jinja", [SYSTEM, USER1, ASSISTANT1, USER2], False, None, MISTRAL_TOKENS),
    ("mistral-v0.3-tools-call-response", "mistral-v0.3.jinja",
     [USER_WEATHER, TOOL_CALL, TOOL_RESPONSE, ASSISTANT_WEATHER, USER2], True, TOOLS, MISTRAL_TOKENS),
    ("mistral-v0.3-alternation-raises", "mistral-v0.3.jinja", [USER1, USER2], True, None, MISTRAL_TOKENS),
    ("mistral-v0.3-bad-tool-id-raises", "mistral-v0.3.jinja",
     [USER_WEATHER, {**TOOL_CALL, "tool_calls": [{**TOOL_CALL["tool_calls"][0], "id": "abc"}]}], False, [WEATHER_TOOL], MISTRAL_TOKENS),
]

# ---- feature snippets: (name, source, variables) ------------------------------------------------

MESSAGES = [SYSTEM, USER1, ASSISTANT1, {**USER2, "name": "bob"}, TOOL_CALL]
VARS = {
    "items": [3, 1, 2, 5, 4],
    "d": {"b": 2, "a": 1, "c": [1, 2.0, None], "é": "ü"},
    "words": ["Banana", "apple", "cherry", "Apple"],
    "people": [{"name": "Ann", "age": 31, "tags": ["x"]}, {"name": "bob", "age": 25}, {"name": "Cy", "age": 31, "nick": None}],
    "text": "  Hello, World! \n",
    "x": 1,
    "f": 2.5,
}

SNIPPETS = [
    ("ws-lstrip-trim", "  {% if true %}\n  x\n  {% endif %}\n  y {{ 1 }}\n", {}),
    ("ws-minus", "a  {{- ' b ' -}}  c\n  {%- if true -%}  d  {%- endif -%}\n  e", {}),
    ("ws-loop-minus", "{%- for m in items -%}\n  [{{ m }}]\n{%- endfor %}\nend", {}),
    ("ws-plus", "  {%+ if true %}x{% endif %}\n{% if true +%}\ny{% endif %}\n  {# c #}\nz", {}),
    ("ws-comment", "{# a comment #}\nx\n  {#- strip -#}  y {# multi\nline #} z\n", {}),
    ("ws-var-no-trim", "{{ 'a' }}\n{{ 'b' }}\n  {{ 'c' }}\n", {}),
    ("ws-crlf", "{% if true %}\r\n  a\r\n{% endif %}\r\nb\r\n", {}),
    ("ws-same-line", "{{ x }}   {% if true %}y{% endif %}|   {% if true %}z{% endif %}\n\t{% if true %}t{% endif %}\n  {{ x }} {% if true %}\n{% endif %}", VARS),
    ("ws-template-start", "   {% if true %}x{% endif %}", {}),
    ("ws-tags-in-strings", "{{ '%}' }}{% set s = '}}{%' %}{{ s }}{{ \"{{\" }}", {}),
    ("ws-minus-multiline", "<\n\n  {%- for i in [1, 2] -%}\n\n   {{ i }}  \n\n  {%- endfor -%}  \n\n>", {}),
    ("ws-trailing-newlines", "x\n\n", {}),
    ("raw", "{% raw %}{{ not parsed }} {% if %}{% endraw %}|{%- raw -%}  x  {%- endraw -%}  |", {}),
    ("loop-vars", "{% for x in items %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}"
                  "{{ loop.revindex }}{{ loop.revindex0 }}|{{ loop.previtem }}|{{ loop.nextitem }};{% endfor %}", VARS),
    ("loop-cycle-changed", "{% for p in people %}{{ loop.cycle('odd', 'even') }}{{ loop.changed(p.age) }} {% endfor %}", VARS),
    ("loop-filter", "{% for x in items if x > 2 %}{{ x }}/{{ loop.length }}{{ '!' if loop.last }} {% endfor %}", VARS),
    ("loop-else", "{% for x in [] %}x{% else %}empty{% endfor %}{% for x in missing %}y{% else %}none{% endfor %}", {}),
    ("loop-unpack", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}"
                    "{% for a, b in [[1, 2], (3, 4)] %}{{ a + b }}{% endfor %}{% for c in 'héllo' %}{{ c }}.{% endfor %}", VARS),
    ("loop-break-continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x > 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("loop-nested", "{% for a in [1, 2] %}{% for b in 'xy' %}{{ loop.index }}{{ a }}{{ b }} {% endfor %}{{ loop.index }};{% endfor %}", {}),
    ("scope-loop-set", "{% set n = 1 %}{% for i in [1, 2] %}{% set n = n + i %}{{ n }}{% endfor %}{{ n }}"
                       "{% for i in [1] %}{% set inner = 5 %}{% endfor %}[{{ inner }}]{% if true %}{% set leak = 7 %}{% endif %}{{ leak }}", {}),
    ("namespace", "{% set ns = namespace(found=false, n=0) %}{% for i in [1, 2, 3] %}{% if i == 2 %}{% set ns.found = true %}{% endif %}"
                  "{% set ns.n = ns.n + i %}{% endfor %}{{ ns.found }} {{ ns.n }} {{ ns }}{% set e = namespace() %}{% set e.x = 'y' %}{{ e.x }}", {}),
    ("set-block", "{% set x %}a{{ 1 + 1 }}\nb{% endset %}[{{ x }}]{% set y | upper | trim %} abc {% endset %}[{{ y }}]", {}),
    ("block-scopes", "{% set a = 1 %}{% generation %}{% set a = 2 %}{{ a }}{% endgeneration %}{{ a }}"
                     "{% filter upper %}{% set a = 3 %}{{ a }}{% endfilter %}{{ a }}{% set b %}{% set a = 4 %}{{ a }}{% endset %}{{ b }}{{ a }}"
                     "{% with %}{% set a = 5 %}{% endwith %}{{ a }}{% set ns = namespace(v=0) %}{% generation %}{% set ns.v = 6 %}{% endgeneration %}{{ ns.v }}", {}),
    ("set-tuple", "{% set a, b = 1, 'two' %}{{ a }}{{ b }}{% set t = 1, 2 %}{{ t }}", {}),
    ("macro", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', punct='?') }} "
              "{{ greet(name='C') }} [{{ greet() }}]{% macro rec(n) %}{{ n }}{% if n > 0 %}{{ rec(n - 1) }}{% endif %}{% endmacro %}{{ rec(3) }}", {}),
    ("macro-sees-outer", "{% set outer = 'o' %}{% macro m() %}{{ outer }}{{ x }}{% endmacro %}{{ m() }}", VARS),
    ("with-filter-generation", "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}]{% filter upper %}abc{{ 'd' }}{% endfilter %}"
                               "{% generation %}gen {{ x }}{% endgeneration %}", VARS),
    ("literals", "{{ 'a\\'b' }} {{ \"q\\\"x\" }} {{ 'tab\\there' }} {{ '\\u00e9\\x41\\\\' }} {{ 1_000 }} {{ 1.5e3 }} {{ 2E-3 }} {{ -3 }} "
                 "{{ [1, 'a', none, true, False, None] }} {{ {'k': [1, 2.0], 'j': {'x': none}, 3: 'i'} }} {{ (1,) }} {{ () }} {{ 'ab' 'cd' }}", {}),
    ("repr", "{{ ['it\\'s', \"a\\\"b\", 'both\\'\"', 'nl\\n', 'é\\x01'] }} {{ d }} {{ people[2] }}", VARS),
    ("arithmetic", "{{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7.5 % 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 1 + 2.5 }} "
                   "{{ 'ab' * 3 }} {{ 2 * [0] }} {{ [1] + [2] }} {{ 'a' ~ 1 ~ none ~ f }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1/3 }} {{ 10 / 5 }} "
                   "{{ -x }} {{ +f }} {{ true + 1 }} {{ 1e16 }} {{ 123456789012345678 * 1.0 }} {{ 0.00001 }} {{ 0.0001 }} {{ -0.0 }} {{ 3 - 5 }}", VARS),
    ("compare", "{{ 1 == 1.0 }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' in 'abc' }} {{ 2 not in [1, 3] }} {{ 'a' in d }} {{ [1, 2] == [1, 2] }} "
                "{{ true == 1 }} {{ 'b' > 'a' }} {{ [1, 2] < [1, 3] }} {{ d == {'b': 2, 'a': 1, 'c': [1, 2.0, none], 'é': 'ü'} }} "
                "{{ none == none }} {{ missing == none }} {{ x != 2 }} {{ 'x' <= 'x' }}", VARS),
    ("logic", "{{ 0 or 'x' }} {{ 1 and 'y' }} {{ not none }} {{ '' or [] }} {{ 'a' if false else 'b' }} [{{ 'a' if false }}] "
              "{{ (messages[0].role == 'system' and messages[1:] or messages)|length }} {{ not x is none }} {{ x is not none and x > 0 }}",
     {**VARS, "messages": MESSAGES}),
    ("tests", "{{ x is defined }} {{ y is undefined }} {{ none is none }} {{ 'a' is string }} {{ d is mapping }} {{ d is iterable }} "
              "{{ 1 is number }} {{ 1.5 is float }} {{ 2 is integer }} {{ true is boolean }} {{ true is number }} {{ 3 is odd }} "
              "{{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 'x' is in 'xyz' }} {{ 2 is equalto 2 }} {{ 2 is eq(3) }} {{ none is sameas none }} "
              "{{ undefined_thing is iterable }} {{ undefined_thing is sequence }} {{ 'ab' is lower }} {{ 'AB' is upper }} "
              "{{ x is not none }} {{ items is sequence }} {{ 5 is iterable }} {{ 'upper' is filter }} {{ 'odd' is test }} "
              "{{ true is true }} {{ 0 is false }} {{ 3 is gt 2 }} {{ 3 is le(2) }} {{ x is ne 1 }} {{ f is callable }} "
              "{{ range is callable }} {{ 'abc' is sequence }} {{ 1 is mapping }}", VARS),
    ("filters-text", "{{ text|trim }}|{{ 'xxhixx'|trim('x') }}|{{ text|length }}|{{ items|count }}|{{ 'aBc DEF'|upper }}|{{ 'aBc DEF'|lower }}|"
                     "{{ 'hello wOrld-foo(bar [baz'|title }}|{{ 'hELLO world'|capitalize }}|{{ 12|string ~ 3 }}|{{ f|string }}|"
                     "{{ 'a-b-c'|replace('-', '+') }}|{{ 'a-b-c'|replace('-', '', 1) }}|{{ '<b>'|safe }}|{{ '<a href=\"x\">&\\''|escape }}|"
                     "{{ 'one two  three'|wordcount }}|{{ 'mid'|center(9) }}|{{ 'x%sy%d'|format('A', 5) }}", VARS),
    ("filters-convert", "{{ '42'|int }} {{ ' 7 '|int }} {{ '3.9'|int }} {{ 'x'|int }} {{ 'x'|int(5) }} {{ 3.9|int }} {{ true|int }} {{ '0x1A'|int(0, 16) }} "
                        "{{ '2.5'|float }} {{ 3|float }} {{ 'no'|float }} {{ '1e3'|float }} {{ none|int }} {{ -2|abs }} {{ -2.5|abs }} "
                        "{{ 2.567|round(2) }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.1|round(0, 'ceil') }} {{ 2.9|round(method='floor') }} {{ 7|round }}", VARS),
    ("filters-default", "{{ missing|default('dflt') }} {{ missing|d('d2') }} {{ none|default('n') }} {{ ''|default('e', true) }} "
                        "{{ x|default(9) }} [{{ missing|default }}] {{ missing|default(missing2)|length }}", VARS),
    ("filters-seq", "{{ items|join(',') }} {{ items|join }} {{ people|join('; ', attribute='name') }} {{ items|first }} {{ items|last }} "
                    "{{ 'abc'|first }} {{ 'abc'|last }} {{ 'ab'|list }} {{ d|list }} {{ d|items|list }} {{ items|reverse|list }} {{ 'abc'|reverse }} "
                    "{{ items|sort }} {{ items|sort(reverse=true) }} {{ words|sort }} {{ words|sort(case_sensitive=true) }} {{ words|unique|list }} "
                    "{{ words|unique(case_sensitive=true)|list }} {{ items|sum }} {{ people|sum(attribute='age') }} {{ items|min }} {{ items|max }} "
                    "{{ words|max }} {{ people|map(attribute='name')|list }} {{ people|map(attribute='nick', default='-')|list }} "
                    "{{ words|map('upper')|list }} {{ words|map('replace', 'a', '4')|join(' ') }} {{ people|sort(attribute='age')|map(attribute='name')|join }} "
                    "{{ people|sort(attribute='age,name')|map(attribute='name')|join }} {{ d|dictsort }} {{ people[:1]|map(attribute='tags.0')|list }} "
                    "{{ [] | first }} {{ people|max(attribute='age') }}", VARS),
    ("filters-select", "{{ messages|selectattr('role', 'equalto', 'user')|list|length }} {{ messages|map(attribute='role')|join(',') }} "
                       "{{ messages|rejectattr('role', 'equalto', 'system')|map(attribute='role')|list }} "
                       "{{ messages|selectattr('tool_calls', 'undefined')|list|length }} {{ messages|selectattr('name')|map(attribute='name')|first }} "
                       "{{ messages|selectattr('tool_calls', 'defined')|list|length }} {{ items|select('odd')|list }} {{ items|reject('odd')|list }} "
                       "{{ items|select('gt', 2)|list }} {{ items|select|list }} {{ [0, '', 'a', none]|select|list }} "
                       "{{ messages|selectattr('role', 'in', ['user', 'system'])|list|length }}",
     {**VARS, "messages": MESSAGES}),
    ("filters-indent", "[{{ 'a\\nb\\n\\nc'|indent }}]\n[{{ 'a\\nb\\n\\nc'|indent(2, true) }}]\n[{{ 'a\\nb\\n\\nc'|indent('> ', blank=true) }}]\n"
                       "[{{ 'x'|indent(first=true) }}]\n[{{ ''|indent(first=true) }}]", {}),
    ("filters-tojson", "{{ d|tojson }}\n{{ d|tojson(indent=2) }}\n{{ 'é\"\\n\\t\\u0001/'|tojson }}\n{{ [1.0, 2, none, true, 1e20, 0.1]|tojson }} "
                       "{{ {}|tojson(indent=2) }} {{ []|tojson(indent=2) }} {{ 'é🙂'|tojson(ensure_ascii=true) }} {{ d|tojson(sort_keys=true) }} "
                       "{{ people|tojson(separators=(',', ':')) }} {{ {'a': [[]]}|tojson(indent='\\t') }} {{ messages[-1]|tojson(indent=4) }} "
                       "{{ (1, 2)|tojson }} {{ {1: 'int key', none: 0, true: 1}|tojson }}",
     {**VARS, "messages": MESSAGES}),
    ("methods-str", "{{ text.strip() }}|{{ text.lstrip() }}|{{ text.rstrip() }}|{{ 'xxhixx'.strip('x') }}|{{ '..a..'.lstrip('.') }}|"
                    "{{ 'a b  c'.split() }}|{{ ' a b  c '.split(None, 1) }}|{{ 'a,b,,c'.split(',') }}|{{ 'a,b,c'.split(',', 1) }}|"
                    "{{ 'a,b,c'.rsplit(',', 1) }}|{{ ' a b  c '.rsplit(None, 1) }}|{{ ' a b  c '.rsplit() }}|{{ 'l1\\nl2\\r\\nl3'.splitlines() }}|{{ 'hello'.startswith('he') }}|"
                    "{{ 'hello'.startswith(('x', 'h')) }}|{{ 'hello'.endswith('lo') }}|{{ 'hello'.endswith('l', 0, 3) }}|{{ 'MiXed'.upper() }}|"
                    "{{ 'MiXed'.lower() }}|{{ \"they're bill's friends\".title() }}|{{ 'hELLO'.capitalize() }}|{{ 'aaa'.replace('a', 'b', 2) }}|"
                    "{{ 'abcabc'.find('c') }}|{{ 'abcabc'.rfind('c') }}|{{ 'abc'.find('z') }}|{{ 'abcabc'.count('bc') }}|{{ '-'.join(['a', 'b']) }}|"
                    "{{ '42'.isdigit() }}|{{ 'ab'.isalpha() }}|{{ '  '.isspace() }}|{{ 'Hello'.swapcase() }}|{{ '7'.zfill(3) }}|"
                    "{{ 'pre_x'.removeprefix('pre_') }}|{{ 'x.py'.removesuffix('.py') }}|{{ 'abc'.index('c') }}", VARS),
    ("methods-format", "{{ '{} {}'.format(1, 'a') }}|{{ '{0}{1}{0}'.format('x', 'y') }}|{{ '{name}!'.format(name='n') }}|"
                       "{{ '{:>5}|{:<4}|{:^6}|{:05d}|{:.2f}|{:+d}|{:x}|{:,}|{!r}'.format('r', 'l', 'c', 42, 3.14159, 5, 255, 1234567, 'q') }}|"
                       "{{ '{{literal}} {}'.format(f) }}|{{ '{0[name]} {1}'.format(people[0], true) }}|"
                       "{{ '%s-%d-%05.2f|%r|%5s|%-4d|%%' % ('a', 3, 2.5, 'q', 'r', 7) }}|{{ '%(x)s' % {'x': 1} }}|{{ '%s' % 'one' }}", VARS),
    ("methods-dict-list", "{{ d.keys()|list }} {{ d.values()|list }} {{ d.get('a') }} {{ d.get('zz', 'dflt') }} [{{ d.get('zz') }}] "
                          "{{ d['b'] }} {{ d.b }} {{ d['c'][-1] }} {{ people[0].tags[0] }} {{ items.index(5) }} {{ items.count(3) }} "
                          "{{ 'tool_calls' in messages[-1] }} {{ messages[-1].tool_calls[0].function.arguments.location }} {{ d.items()|list|length }}",
     {**VARS, "messages": MESSAGES}),
    ("slices", "{{ items[1:] }} {{ items[::-1] }} {{ items[-2:] }} {{ items[:-1] }} {{ items[::2] }} {{ items[1:4:2] }} {{ items[10:] }} "
               "{{ 'hello'[1:3] }} {{ 'hello'[::-1] }} {{ 'hello'[-1] }} {{ 'hello'[:-1] }} {{ (1, 2, 3)[1:] }} {{ items[-1] }} {{ items.0 }} "
               "[{{ items[99] }}] {{ items[5:1:-1] }} {{ '日本語🙂'[::-1] }} {{ '日本語🙂'|length }}", VARS),
    ("undefined", "[{{ missing }}]|[{{ d.missing }}]|[{{ d['missing'] }}]|{{ missing|length }}|{% for x in missing %}x{% endfor %}|"
                  "{{ missing ~ 'z' }}|{{ missing is defined }}|{{ d.missing is defined }}|{{ 'abc'.nope is defined }}|{{ none.x is defined }}|"
                  "{{ not missing }}|{{ 'x' in missing }}|{{ missing|string }}|{{ (missing or 'fallback') }}|{{ items[9] is defined }}", VARS),
    ("generators", "{% set g = items|select('odd') %}{{ g is iterable }} {{ g is sequence }} {% if g %}truthy{% endif %} "
                   "{% for x in g %}{{ x }}{% endfor %}|{% for x in g %}{{ x }}{% endfor %}| {{ items|map('string')|first }} "
                   "{% set r = items|reverse %}{{ r|list }}{{ r|list }} {{ 3 in items|select('odd') }} {{ [] | select | list }} "
                   "{% if []|select %}empty-generator-is-truthy{% endif %} {{ (d|items|list)[0] }} {{ words|unique|join(',') }} "
                   "{{ (items|select('odd'))[0] is defined }} {{ 5[1:] is defined }}", VARS),
    ("globals", "{{ range(3)|list }} {{ range(1, 10, 3)|list }} {{ range(5, 0, -2)|list }} {{ dict(a=1, b=[2]) }} "
                "{% set j = joiner(', ') %}{% for i in items %}{{ j() }}{{ i }}{% endfor %} {{ namespace(a=1).a }} "
                "{{ raise_exception is defined }} {{ strftime_now is defined }}", VARS),
    ("markup", "{{ 'Use <' | safe + d['é'] + \"'s\" + '>' | safe + people[0] | tojson }}|{{ '<b>' + 'x' | e }}|{{ ('a' | safe) * 2 }} "
               "{{ ['q' | safe] }} {{ 'x' | safe is string }} {{ 'x' | e is escaped }} {{ 'x' is escaped }} {{ ('<' | e) | e }} "
               "{{ ('<' | e) | forceescape }} {{ ('<' | safe ~ '>') }} {{ 5 | safe + '&' }}", VARS),
    ("bos-eos-vars", "{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ tools }}|{{ documents }}|{{ messages|length }}",
     {"bos_token": "<s>", "eos_token": "</s>", "messages": MESSAGES}),
    ("literal-surrogate", "{{ '\\ud83d'|length }} {{ ['\\ud83d', 'a\\udc00'] }}", {}),
    ("format-numbers", "{{ '%g|%G|%.3g|%#g|%e|%.2E|%5.1f|%.0f|%a' % (1e20, 1e-05, 1234567.0, 2.0, 12345.678, 0.000123, 99999.95, 2.5, 'é') }}|"
                       "{{ '{:g}|{:.3}|{:.3}|{:.2}|{:G}|{:.1e}|{:.2f}|{!a}|{:.0%}'.format(1234567.0, 1.0, 1e20, 123.456, 1e-20, 0.00015, 1e16 / 3, 'ü🙂', 0.125) }}", {}),
    ("round-exact", "{{ 964.15|round(1) }} {{ 8.205|round(2) }} {{ 2.675|round(2) }} {{ 0.125|round(2) }} {{ -0.4|round }} {{ 15|round(-1) }} "
                    "{{ 25|round(-1) }} {{ -35|round(-1) }} {{ 1234.5|round(-2) }} {{ 89.400005|round(5) }} {{ 1e300|round(-300) }} {{ 0.5|round }}", {}),
    ("macro-varargs-kwargs", "{% macro row(first, sep=', ') %}{{ first }}{% for v in varargs %}{{ sep }}{{ v }}{% endfor %}{{ kwargs|dictsort }}{% endmacro %}"
                             "{{ row(1) }}|{{ row(1, '-', 2, 3, b=1, a=2) }}|{% macro plain(a) %}{{ a }}{{ varargs is defined }}{% endmacro %}{{ plain(5) }}", {}),
    ("call-block", "{% macro box(title) %}[{{ title }}: {{ caller() }}]{% endmacro %}{% call box('T') %}body {{ x }}{% endcall %}\\n"
                   "{% macro each(xs) %}{% for v in xs %}{{ caller(v, loop.index) }}{% endfor %}{% endmacro %}"
                   "{% call(item, n=0) each(items[:2]) %}<{{ n }}:{{ item }}>{% endcall %} {% macro opt() %}{{ caller is defined }}{% endmacro %}{{ opt() }}", VARS),
    ("loop-recursive", "{% for node in tree recursive %}{{ loop.depth }}.{{ loop.index }}:{{ node.name }}"
                       "{% if node.children %}({{ loop(node.children) }}){% endif %}{{ loop.depth0 }};{% endfor %}",
     {"tree": [{"name": "a", "children": [{"name": "b", "children": []}, {"name": "c", "children": [{"name": "d"}]}]}, {"name": "e"}]}),
    ("methods-str-more", "{% set s = '🙂ax🙂x yz' %}{{ s.find('x', 2) }} {{ s.rfind('x', 0, -1) }} {{ s.count('x', 3) }} {{ s.count('') }} "
                         "{{ s[s.find('y'):] }} [{{ s.ljust(12, '.') }}] [{{ s.center(13, '*') }}] {{ 'a=b=c'.partition('=') }} "
                         "{{ 'a=b=c'.rpartition('=') }} {{ 'abc'.rpartition('x') }} {{ 'Hello World'.istitle() }} {{ 'Hello world'.istitle() }} "
                         "{{ 'é'.isascii() }} {{ '²'.isdigit() }} {{ '²'.isdecimal() }} {{ '½'.isnumeric() }} [{{ 'a\\tbc\\td'.expandtabs() }}]", {}),
    ("lenient-odds", "{{ false|map('string')|list }} {{ none|map(attribute='x')|list }} [{{ ' x ' % [1] }}] {{ missing in d }} "
                     "[{{ none[:1] }}] {{ true[1:] is defined }}", VARS),
    ("filter-attr", "[{{ d|attr('b') }}] {{ d|attr('items') is callable }} {{ (d|attr('b')) is defined }} {{ namespace(v=3)|attr('v') }}", VARS),
    ("loop-else-break", "{% for i in items %}{{ i }}{% break %}{% else %}E{% endfor %}|{% for i in items %}{% continue %}{% else %}E{% endfor %}|"
                        "{% for i in items %}{{ i }}{% if i == 5 %}{% continue %}{% endif %}{% else %}E{% endfor %}|{% for i in items if i > 9 %}{% else %}E{% endfor %}", VARS),
    ("scope-assigned-later", "{% for i in items[:1] %}[{{ x }}]{% endfor %}{% macro m() %}<{{ x }}>{% endmacro %}{{ m() }}{% set y %}({{ x }}){% endset %}{{ y }}"
                             "{% set x = 2 %}{{ x }}{{ m() }}|{% for i in items[:1] %}{% for j in items[:1] %}{{ f }}{% endfor %}{% set f = 0 %}{% endfor %}{{ f }}|"
                             "{% for i in items[:1] %}{% if i > 9 %}{% set n = 1 %}{% endif %}{% macro k() %}{{ n }}{% endmacro %}{{ k() }}{% endfor %}"
                             "{% set ns = namespace(v=0) %}{% set z %}{% set ns.v = z %}{% endset %}[{{ ns.v }}]", {**VARS, "z": 5, "n": 4}),
]

# Snippets that raise: (name, source, variables); the expected message is Jinja's.
ERRORS = [
    ("err-raise", "a{{ raise_exception('boom: ' ~ x) }}", VARS),
    ("err-undefined-attr", "{{ missing.attr }}", {}),
    ("err-undefined-add", "{{ 'a' + missing }}", {}),
    ("err-str-plus-int", "{{ 'a' + 1 }}", {}),
    ("err-not-iterable", "{% for x in 3 %}{% endfor %}", {}),
    ("err-none-length", "{{ none|length }}", {}),
    ("err-div-zero", "{{ 1 / 0 }}", {}),
    ("err-call-non-callable", "{{ x() }}", VARS),
    ("err-namespace-attr", "{% set ns = 1 %}{% set ns.a = 2 %}", {}),
    ("err-unpack", "{% for a, b in [[1, 2, 3]] %}{% endfor %}", {}),
    ("err-tojson-undefined", "{{ missing|tojson }}", {}),
    ("err-unsafe-append", "{{ items.append(1) }}", VARS),
    ("err-generator-length", "{{ items|select('odd')|length }}", VARS),
    ("err-generator-tojson", "{{ items|map('string')|tojson }}", VARS),
    ("err-generator-last", "{{ items|select|last }}", VARS),
    ("err-unknown-filter-in-if", "{% if true %}\n{{ x|nosuch }}{% endif %}", VARS),
    ("err-unknown-test-in-condexpr", "{{ 1 if x is nosuchtest else 2 }}", VARS),
    ("err-markup-plus-int", "{{ 'a' | safe + 1 }}", {}),
    ("err-none-element", "{{ none[0].text }}", {}),
    ("err-list-element", "{{ items[9]['x'] }}", VARS),
    ("err-sort-mixed", "{{ [1, 'a']|sort }}", {}),
    ("err-sort-mixed-reverse", "{{ [2, 1, 'a']|sort(reverse=true) }}", {}),
    ("err-str-times-str", "{{ 'a' * 'b' }}", {}),
    ("err-float-division-by-zero", "{{ f / 0 }}", VARS),
    ("err-int-modulo-by-zero", "{{ x % 0 }}", VARS),
    ("err-zero-negative-power", "{{ 0 ** -1 }}", {}),
    ("err-unsafe-dict-pop", "{{ d.pop('a') }}", VARS),
    ("err-undefined-int", "{{ missing|int }}", {}),
    ("err-undefined-float", "{{ missing|float }}", {}),
    ("err-percent-d-of-str", "{{ '%d' % 'a' }}", {}),
    ("err-format-mixed-numbering", "{{ '{} {0}'.format(1) }}", {}),
    ("err-format-missing-index", "{{ '{1}'.format(1) }}", {}),
    ("err-macro-argument-twice", "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, a=2) }}", {}),
    ("err-call-block-without-caller", "{% macro m() %}x{% endmacro %}{% call m() %}body{% endcall %}", {}),
    ("err-call-non-recursive-loop", "{% for x in items %}{{ loop(items) }}{% endfor %}", VARS),
    ("err-map-unknown-filter", "{{ items|map('nosuch')|list }}", VARS),
    ("err-select-unknown-test", "{{ items|select('nosuch')|list }}", VARS),
    ("err-dictsort-by", "{{ d|dictsort(by='name') }}", VARS),
    ("err-raise-without-message", "{{ raise_exception() }}", {}),
    ("err-unpack-int", "{% for a, b in [1] %}{% endfor %}", {}),
    ("err-slice-int", "{{ x[1:] }}", VARS),
    ("err-unique-unhashable", "{{ [[1], [1]]|unique|list }}", {}),
    ("err-round-undefined", "{{ missing|round }}", {}),
    ("err-markup-attribute", "{{ ('a'|safe).nope.x }}", {}),
    ("err-indent-none", "{{ none|indent }}", {}),
    ("err-reverse-int", "{{ x|reverse }}", VARS),
    ("err-last-int", "{{ x|last }}", VARS),
    ("err-dictsort-none", "{{ none|dictsort }}", {}),
    ("err-power-str", "{{ 'a' ** 2 }}", {}),
    ("err-abs-undefined", "{{ (x[0])|abs }}", VARS),
    ("err-attr-item-is-not-attribute", "{{ (d|attr('b')) + 1 }}", VARS),
]

# Templates that do not parse: (name, source); the expected line is Jinja's TemplateSyntaxError.lineno.
SYNTAX_ERRORS = [
    ("syntax-dangling-plus", "line1\n{% for x in y %}\n{{ x + }}\n{% endfor %}"),
    ("syntax-unclosed-if", "{% if x %}\nno end\nstill none\n"),
    ("syntax-unknown-filter", "ok\n\n{{ x | nosuchfilter }}"),
    ("syntax-unknown-test", "{{ x is nosuchtest }}"),
    ("syntax-unknown-filter-in-loop", "{% if x %}\n{% for a in b %}{{ a|nosuch }}{% endfor %}{% endif %}"),
    ("syntax-unknown-filter-in-filter-argument", "{{ x|default(y|nosuch) }}"),
    ("syntax-unknown-filter-in-call-keyword", "{{ f(a, key=(b|nosuch)) }}"),
    ("syntax-unknown-tag", "a\n{% frobnicate %}"),
    ("syntax-stray-endfor", "line1\nline2\n{% endfor %}"),
    ("syntax-nesting-mistake", "{% if x %}{% for a in b %}\n{% endif %}{% endfor %}"),
    ("syntax-mismatched-end", "{% for x in y %}\n{% endif %}"),
    ("syntax-unclosed-paren", "x\n{{ (1, 2 }}"),
    ("syntax-unclosed-comment", "a\n{# never closed"),
    ("syntax-unterminated-string", "{{ 'abc }}"),
    ("syntax-bad-assign", "{% set 1 = 2 %}"),
    ("syntax-bad-tuple-assign", "{% for a, b.c in x %}{% endfor %}"),
    ("syntax-truncated-escape", "x\n{{ 'a\\u12' }}"),
    ("syntax-illegal-character", "{{ '\\U00110000' }}"),
    ("syntax-filter-name-is-number", "{{ x|1 }}"),
    ("syntax-macro-parameter-literal", "{% macro m(1) %}{% endmacro %}"),
    ("syntax-positional-after-keyword", "{{ f(1, a=1, 2) }}"),
    ("syntax-macro-without-name", "{% macro %}{% endmacro %}"),
]


def main():
    templates = {}
    for name in sorted(os.listdir(HERE)):
        if name.endswith(".jinja"):
            with open(os.path.join(HERE, name), encoding="utf-8", newline="") as f:
                templates[name] = f.read()

    cases = []
    for name, template, messages, gen, tools, extra in CASES:
        case = {"name": name, "template": template, "messages": messages, "add_generation_prompt": gen,
                "tools": tools, "extra": extra}
        try:
            case["expected"] = render(templates[template], messages, gen, tools, extra)
        except jinja2.exceptions.TemplateError as e:
            case["error"] = str(e)
        cases.append(case)

    snippets = []
    for name, source, variables in SNIPPETS + ERRORS:
        snippet = {"name": name, "source": source, "vars": variables}
        variables = dict(variables)
        messages = variables.pop("messages", [])
        try:
            snippet["expected"] = render(source, messages, extra=variables)
        except jinja2.exceptions.TemplateSyntaxError:
            raise
        except Exception as e:  # noqa: BLE001 - any runtime error is an expected outcome here
            snippet["error"] = str(e)
        snippets.append(snippet)
    for name, source in SYNTAX_ERRORS:
        try:
            env.from_string(source)
            raise SystemExit(f"{name} parsed; it should not")
        except jinja2.exceptions.TemplateSyntaxError as e:
            snippets.append({"name": name, "source": source, "vars": {}, "error": e.message, "error_line": e.lineno})

    out = {"generator": "make_expected.py", "jinja2": jinja2.__version__, "cases": cases, "snippets": snippets}
    with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases and {len(snippets)} snippets")


if __name__ == "__main__":
    main()
