#!/usr/bin/env python3
"""Fixtures for tests/test_eval_core.c: Python's random.Random outputs
(getrandbits, shuffle, sample as nanochat's CORE uses them) and CORE prompts
rendered by nanochat's Jinja templates from the bundle.

Run with /usr/bin/python3 (CPython's own random module; jinja2 for the prompts, apt python3-jinja2):
    /usr/bin/python3 tools/gen_eval_fixtures.py tests/fixtures/eval/pyrandom.txt \
        ../shared/data/eval/core tests/fixtures/eval/core_prompts.json
Format: one case per line, space-separated integers:
    u32 SEED N v1..vN             first N getrandbits(32)
    shuffle SEED N p1..pN         Random(SEED).shuffle(list(range(N)))
    sample SEED N IDX K s1..sK    Random(SEED).sample([i for i in range(N) if i != IDX], K)
    core N IDX K s1..sK           nanochat: data shuffled by Random(1337), then
                                  few-shot Random(1234+IDX).sample(...) over the shuffled
                                  positions; s = original indices of the examples
    random SEED N f1..fN          random() as repr floats
"""
import random
import sys

out = []
for seed in [0, 1, 42, 1337, 1234, 2**32 - 1, 2**32, 2**40 + 7]:
    r = random.Random(seed)
    out.append("u32 %d 8 %s" % (seed, " ".join(str(r.getrandbits(32)) for _ in range(8))))
for n in [0, 1, 2, 5, 33, 100, 1000, 2376]:
    x = list(range(n))
    random.Random(1337).shuffle(x)
    out.append("shuffle 1337 %d %s" % (n, " ".join(map(str, x))))
for (n, idx, k) in [(10, 0, 3), (12, 5, 10), (30, 29, 10), (86, 3, 10), (87, 3, 10), (100, 7, 10),
                    (2376, 2375, 10), (230, 11, 3), (22, 0, 3), (23, 22, 5), (1000, 999, 1)]:
    seed = 1234 + idx
    avail = [i for i in range(n) if i != idx]
    s = random.Random(seed).sample(avail, k)
    out.append("sample %d %d %d %d %s" % (seed, n, idx, k, " ".join(map(str, s))))
for (n, idx, k) in [(100, 0, 10), (273, 17, 0), (50, 49, 10), (20, 3, 10)]:
    data = list(range(n))
    random.Random(1337).shuffle(data)
    rng = random.Random(1234 + idx)
    avail = [i for i in range(n) if i != idx]
    fs = [data[i] for i in rng.sample(avail, k)] if k > 0 else []
    out.append("core %d %d %d %s" % (n, idx, k, " ".join(map(str, fs))))
r = random.Random(7)
out.append("random 7 5 %s" % " ".join(repr(r.random()) for _ in range(5)))
with open(sys.argv[1], "w") as f:
    f.write("\n".join(out) + "\n")

# ---- CORE prompts rendered with Jinja exactly as nanochat's core_eval.py ----
# Second fixture (needs the bundle): python3 tools/gen_eval_fixtures.py OUT BUNDLE PROMPTS.json
if len(sys.argv) > 3:
    import gzip
    import json
    from jinja2 import Template

    MC = """
{%- for example in fewshot_examples -%}
{{ example.query }}{{ continuation_delimiter }}{{ example.choices[example.gold] }}

{% endfor -%}
{{ item.query }}{{ continuation_delimiter }}{{ choice }}""".strip()
    SCHEMA = """
{%- for example in fewshot_examples -%}
{{ example.context_options[example.gold] }}{{ continuation_delimiter }}{{ example.continuation }}

{% endfor -%}
{{ context }}{{ continuation_delimiter }}{{ item.continuation }}""".strip()
    LM = """
{%- for example in fewshot_examples -%}
{{ example.context | trim }}{{ continuation_delimiter }}{{ example.continuation }}

{% endfor -%}
{{ item.context | trim }}{{ continuation_delimiter }}{% if include_continuation %}{{ item.continuation }}{% endif %}""".strip()

    bundle = sys.argv[2]
    cases = []
    for (label, uri, kind, k, delim, cap) in [
            ("copa", "commonsense_reasoning/copa.jsonl", "multiple_choice", 0, " ", 0),
            ("arc_easy", "world_knowledge/arc_easy.jsonl", "multiple_choice", 10, "\nAnswer: ", 40),
            ("winograd", "language_understanding/winograd_wsc.jsonl", "schema", 0, " ", 0),
            ("lambada_openai", "language_understanding/lambada_openai.jsonl", "language_modeling", 0, " ", 30),
            ("bigbench_operators", "symbolic_problem_solving/bigbench_operators.jsonl", "language_modeling", 10, " ", 0),
            ("jeopardy", "world_knowledge/jeopardy_all.jsonl", "language_modeling", 10, "\nAnswer: ", 25)]:
        with gzip.open("%s/eval_data/%s.gz" % (bundle, uri), "rt", encoding="utf-8") as f:
            data = [json.loads(line.strip()) for line in f]
        random.Random(1337).shuffle(data)
        if cap > 0:
            data = data[:cap]
        for idx in [0, 7]:
            item = data[idx]
            fs = []
            if k > 0:
                rng = random.Random(1234 + idx)
                avail = [i for i in range(len(data)) if i != idx]
                fs = [data[i] for i in rng.sample(avail, k)]
            ctx = {"fewshot_examples": fs, "continuation_delimiter": delim, "item": item}
            if kind == "multiple_choice":
                prompts = [Template(MC).render(choice=c, **ctx) for c in item["choices"]]
            elif kind == "schema":
                prompts = [Template(SCHEMA).render(context=c, **ctx) for c in item["context_options"]]
            else:
                prompts = [Template(LM).render(include_continuation=False, **ctx).strip(),
                           Template(LM).render(include_continuation=True, **ctx)]
            cases.append({"label": label, "uri": uri, "type": kind, "fewshot": k, "delim": delim, "max": cap,
                          "idx": idx, "prompts": prompts})
    with open(sys.argv[3], "w") as f:
        json.dump(cases, f, ensure_ascii=False, indent=0)
