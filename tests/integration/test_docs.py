"""The repository documents itself: docs/openapi.yaml is valid OpenAPI 3.1, names exactly the
routes llmuxd serves (`llmuxd --routes`) and matches live answers; docs/api.md lists every error
code the daemon's sources can answer with; --help agrees with the man pages; docs link only
inside the repository and name the version in VERSION."""
import glob
import json
import os
import re
import subprocess
import unittest

import jsonschema
import yaml

from harness import ROOT, Case, binary, chat_body

VALIDATOR = os.path.join(ROOT, "tests/openapi/node_modules/.bin/validate-api")
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Which argument of each error-producing call is the code, and which the status (None: none).
CODE_CALLS = {"request_fail": (3, 1), "entry_error": (4, 2), "refuse": (2, None),
              "fail400": (2, None)}


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def version():
    return read("VERSION").strip()


def run(*args):
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


def openapi():
    return yaml.safe_load(read("docs/openapi.yaml"))


def man_text(path):
    """A man page's source with roff escapes for '-' and fonts removed."""
    text = read(path).replace("\\-", "-").replace("\\(dq", '"')
    return re.sub(r"\\f[BIRP]", "", text)


def split_args(text):
    """Top-level comma-separated arguments of a C call (strings and brackets respected)."""
    args, depth, cur, i = [], 0, "", 0
    while i < len(text):
        c = text[i]
        if c == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            cur += text[i:j + 1]
            i = j + 1
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
        else:
            cur += c
        i += 1
    args.append(cur.strip())
    return args


def source_error_codes():
    """{code: set of literal statuses} for every error code daemon/*.c can answer with."""
    codes = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "daemon/*.c"))):
        src = open(path).read()
        calls = [(name, m.group(1)) for name in CODE_CALLS
                 for m in re.finditer(r"\b%s\s*\((.*?)\);" % name, src, re.S)]
        for name, text in calls:
            if re.match(r"\s*(struct|const|enum|void)\b", text):
                continue        # the function's own definition or prototype
            args = split_args(text)
            ci, si = CODE_CALLS[name]
            if ci >= len(args):
                continue
            status = args[si] if si is not None and si < len(args) else ""
            for code in re.findall(r'"([a-z_]+)"', args[ci]):
                codes.setdefault(code, set())
                if status.isdigit():
                    codes[code].add(int(status))
        for m in re.finditer(r"fail_code\s*=\s*([^;]*);", src):
            for code in re.findall(r'"([a-z_]+)"', m.group(1)):
                codes.setdefault(code, set())
        for pat in (r'\\"code\\":\\"([a-z_]+)\\"', r'"code",\s*json_string\("([a-z_]+)"\)'):
            for code in re.findall(pat, src):
                codes.setdefault(code, set())
    return codes


def doc_error_codes():
    """{code: statuses text} from the rows of docs/api.md's "Error codes" table."""
    text = read("docs/api.md")
    section = text.split("### Error codes", 1)[1].split("\n#", 1)[0]
    return {m.group(1): m.group(2) for m in
            re.finditer(r"^\| `([a-z_]+)` \| ([^|]+) \|", section, re.M)}


class Validate:
    """jsonschema validation of an instance against one of docs/openapi.yaml's schemas."""
    doc = None

    @classmethod
    def check(cls, name, instance):
        if cls.doc is None:
            cls.doc = openapi()
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                  "$ref": "#/components/schemas/" + name,
                  "components": cls.doc["components"]}
        jsonschema.Draft202012Validator(schema).validate(instance)

    @classmethod
    def statuses(cls, path, method):
        """The statuses declared for an operation; a method the path lacks may only be 405."""
        if cls.doc is None:
            cls.doc = openapi()
        op = cls.doc["paths"].get(path, {}).get(method)
        return set(op["responses"]) if op else {"405"}


class OpenAPIDocument(unittest.TestCase):
    def test_valid_openapi_31(self):
        self.assertTrue(os.path.exists(VALIDATOR),
                        "the OpenAPI validator is missing: run `make deps` (scripts/deps.sh)")
        r = run(VALIDATOR, os.path.join(ROOT, "docs/openapi.yaml"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(json.loads(r.stdout)["valid"])

    def test_validator_rejects_a_broken_document(self):
        """The check can fail: an unknown member and a dangling $ref are both refused."""
        text = read("docs/openapi.yaml")
        broken = text.replace("operationId: health\n", "operationId: health\n      bogus: 1\n")
        dangling = text.replace("schemas/Status'", "schemas/Nope'")
        for bad in (broken, dangling):
            path = os.path.join(ROOT, "build-docs-broken.yaml")
            try:
                with open(path, "w") as f:
                    f.write(bad)
                self.assertNotEqual(run(VALIDATOR, path).returncode, 0)
            finally:
                os.unlink(path)

    def test_routes_match_the_router(self):
        r = run(binary("llmuxd"), "--routes")
        self.assertEqual(r.returncode, 0, r.stderr)
        served = {tuple(line.split(" ", 1)) for line in r.stdout.splitlines() if line}
        self.assertTrue(served, "llmuxd --routes printed nothing")
        described = {(m.upper(), p) for p, ops in openapi()["paths"].items()
                     for m in ops if m in METHODS}
        self.assertEqual(sorted(served - described), [],
                         "routes served but missing from docs/openapi.yaml")
        self.assertEqual(sorted(described - served), [],
                         "routes in docs/openapi.yaml that llmuxd does not serve")

    def test_every_operation_has_an_id_and_responses(self):
        seen = set()
        for path, ops in openapi()["paths"].items():
            for m, op in ops.items():
                if m not in METHODS:
                    continue
                self.assertNotIn(op["operationId"], seen)
                seen.add(op["operationId"])
                self.assertTrue(op["responses"], path)

    def test_schemas_are_valid_json_schema(self):
        for name, schema in openapi()["components"]["schemas"].items():
            with self.subTest(schema=name):
                jsonschema.Draft202012Validator.check_schema(schema)


class ErrorCodes(unittest.TestCase):
    def test_every_code_in_the_sources_is_documented(self):
        src, doc = source_error_codes(), doc_error_codes()
        self.assertGreater(len(src), 20)
        missing = sorted(set(src) - set(doc))
        self.assertEqual(missing, [], "error codes missing from docs/api.md's table")
        for code, statuses in src.items():
            for st in statuses:
                self.assertIn(str(st), doc[code], "docs/api.md: status of `%s`" % code)

    def test_every_documented_code_exists(self):
        stale = sorted(set(doc_error_codes()) - set(source_error_codes()))
        self.assertEqual(stale, [], "codes in docs/api.md that daemon/*.c never answers")


class CommandLine(unittest.TestCase):
    def test_llmuxd_help(self):
        for flag in ("--help", "-h"):
            r = run(binary("llmuxd"), flag)
            self.assertEqual(r.returncode, 0, flag)
            self.assertEqual(r.stderr, "", flag)
            self.assertTrue(r.stdout.startswith("Usage: llmuxd"), r.stdout)
        r = run(binary("llmuxd"), "--no-such-option")
        self.assertEqual(r.returncode, 1)
        self.assertIn("Usage: llmuxd", r.stderr)

    def test_llmux_help(self):
        r = run(binary("llmux"), "--help")
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith("Usage: llmux"), r.stdout)

    def help_texts(self):
        yield "daemon/llmuxd.8", run(binary("llmuxd"), "--help").stdout
        top = run(binary("llmux"), "--help").stdout
        yield "client/llmux.1", top
        commands = re.findall(r"^  ([a-z]+) ", top.split("Commands:", 1)[1].split("\n\n")[0],
                              re.M)
        self.assertIn("chat", commands)
        for cmd in (c for c in commands if c != "help"):
            r = run(binary("llmux"), cmd, "--help")
            self.assertEqual(r.returncode, 0, cmd)
            yield "client/llmux.1", r.stdout

    def test_every_long_option_is_in_the_man_page(self):
        for page, text in self.help_texts():
            man = man_text(page)
            for opt in sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text))):
                with self.subTest(page=page, option=opt):
                    found = re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(opt), man)
                    self.assertTrue(found, "%s is missing from %s" % (opt, page))

    def test_hidden_routes_option_is_documented(self):
        self.assertTrue("--routes" in man_text("daemon/llmuxd.8"))

    def test_versions_agree(self):
        v = version()
        self.assertRegex(v, r"^\d+\.\d+\.\d+")
        self.assertEqual(run(binary("llmuxd"), "--version").stdout.strip(), "llmuxd " + v)
        self.assertEqual(run(binary("llmuxd"), "-V").stdout.strip(), "llmuxd " + v)
        self.assertEqual(run(binary("llmux"), "--version").stdout.strip(), "llmux " + v)
        self.assertEqual(openapi()["info"]["version"], v)
        for page in ("client/llmux.1", "daemon/llmuxd.8"):
            self.assertIn('"llmux %s"' % v, read(page).splitlines()[0], page)
        for doc in ("docs/api.md", "docs/architecture.md"):
            self.assertIn("llmux %s" % v, "\n".join(read(doc).splitlines()[:5]), doc)


class IncludeRules(unittest.TestCase):
    """The rules docs/architecture.md states for project includes."""
    ALLOWED = {"common": {"common"}, "conf": {"conf", "common"},
               "upstream": {"upstream", "conf", "common"}, "client": {"client", "common"},
               "daemon": {"daemon", "upstream", "conf", "common"}}

    def test_folders_include_only_what_they_may(self):
        for folder, allowed in self.ALLOWED.items():
            for path in glob.glob(os.path.join(ROOT, folder, "*.[ch]")):
                for inc in re.findall(r'^#include "([a-z_]+)/', open(path).read(), re.M):
                    self.assertIn(inc, allowed, "%s includes %s/" % (path, inc))

    def test_http_parser_needs_only_libc(self):
        for name in ("daemon/http_parser.c", "daemon/http_parser.h"):
            incs = re.findall(r'^#include "([^"]+)"', read(name), re.M)
            self.assertEqual([i for i in incs if i != "daemon/http_parser.h"], [], name)


def doc_files():
    files = ["docs/openapi.yaml", "client/llmux.1", "daemon/llmuxd.8"]
    for pattern in ("*.md", "*/*.md", "tests/*/*.md"):
        files += [os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern))]
    return sorted(f for f in set(files) if not f.startswith(("build", "tests/openapi/node")))


class Links(unittest.TestCase):
    def test_no_reference_outside_the_repository(self):
        for f in doc_files():
            text = read(f)
            for bad in ("../shared", "/work/"):
                self.assertFalse(bad in text, "%s names %s" % (f, bad))

    def test_no_link_to_the_web(self):
        """Docs stand alone: no Markdown link leaves the repository (plain example URLs in
        code, like a config's base_url, are not links)."""
        for f in doc_files():
            if f.endswith(".md"):
                self.assertEqual(re.findall(r"\]\((?:https?|ftp):[^)]*\)|<https?:[^>]*>",
                                            read(f)), [], f)

    def test_relative_markdown_links_resolve(self):
        for f in doc_files():
            if not f.endswith(".md"):
                continue
            for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", read(f)):
                if re.match(r"[a-z]+:", target):
                    continue
                path = os.path.normpath(os.path.join(ROOT, os.path.dirname(f), target))
                with self.subTest(doc=f, link=target):
                    self.assertTrue(path.startswith(ROOT + os.sep), "leaves the repository")
                    self.assertTrue(os.path.exists(path), "dead link")


def sse_events(data):
    """text/event-stream body (already de-chunked) → [(event, data text)]."""
    out = []
    for block in data.decode().split("\n\n"):
        if not block.strip():
            continue
        ev, lines = "message", []
        for line in block.split("\n"):
            if line.startswith("event: "):
                ev = line[7:]
            elif line.startswith("data: "):
                lines.append(line[6:])
        out.append((ev, "\n".join(lines)))
    return out


class LiveAnswers(Case):
    """What the daemon answers matches the schemas and statuses docs/openapi.yaml declares."""

    def answer(self, method, path, body=None, headers=None):
        st, h, data = self.d.request(method, path, body, headers)
        declared = Validate.statuses(path, method.lower())
        self.assertTrue({str(st), "%dXX" % (st // 100), "default"} & declared,
                        "%s %s answered %d, not declared in docs/openapi.yaml" %
                        (method, path, st))
        self.assertIn("x-request-id", h)
        return st, h, data

    def test_operations(self):
        for path, schema in (("/healthz", "Status"), ("/readyz", "Readiness")):
            st, _, data = self.answer("GET", path)
            self.assertEqual(st, 200)
            Validate.check(schema, json.loads(data))
        st, _, data = self.answer("GET", "/v1/models")
        Validate.check("ModelList", json.loads(data))

    def test_chat_and_errors(self):
        st, h, data = self.answer("POST", "/v1/chat/completions", chat_body("hi"))
        self.assertEqual(st, 200)
        Validate.check("ChatCompletion", json.loads(data))
        self.assertEqual(h["x-llmux-attempts"], "1")
        cases = [("POST", "/v1/chat/completions", "{nope", 400, "invalid_json"),
                 ("POST", "/v1/chat/completions", chat_body("x", model="nope"), 404,
                  "model_not_found"),
                 ("GET", "/v1/chat/completions", None, 405, "method_not_allowed")]
        for method, path, body, status, code in cases:
            st, h, data = self.answer(method, path, body)
            self.assertEqual(st, status)
            Validate.check("ErrorResponse", json.loads(data))
            self.assertEqual(json.loads(data)["error"]["code"], code)
        self.assertEqual(h["allow"], "POST")
        st, _, data = self.d.request("GET", "/nowhere")
        self.assertEqual(st, 404)
        Validate.check("ErrorResponse", json.loads(data))

    def test_gather(self):
        body = {"requests": [chat_body("a"), chat_body("b", model="nope"),
                             {"endpoint": "/v1/embeddings", "body": {"model": "m",
                                                                     "input": "c"}}]}
        Validate.check("GatherRequest", body)
        st, _, data = self.answer("POST", "/v1/gather", body)
        self.assertEqual(st, 200)
        result = json.loads(data)
        Validate.check("GatherResult", result)
        self.assertEqual((result["succeeded"], result["failed"]), (2, 1))
        st, _, data = self.answer("POST", "/v1/gather", dict(body, return_exceptions=False))
        self.assertEqual(st, 404)
        Validate.check("GatherFailure", json.loads(data))
        st, h, data = self.answer("POST", "/v1/gather", dict(body, stream=True))
        self.assertEqual(h["content-type"], "text/event-stream")
        events = sse_events(data)
        self.assertEqual([e for e, _ in events].count("result"), 3)
        self.assertEqual(events[-1][0], "done")
        for ev, text in events:
            Validate.check("GatherSummary" if ev == "done" else "GatherEntry", json.loads(text))
        st, _, data = self.answer("POST", "/v1/gather", {"requests": []})
        self.assertEqual(st, 400)
        self.assertEqual(json.loads(data)["error"]["code"], "invalid_gather")


if __name__ == "__main__":
    unittest.main()
