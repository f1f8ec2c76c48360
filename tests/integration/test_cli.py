"""The llmux CLI (build/llmux) against a real llmuxd and mock upstream: what a user sees on
stdout, stderr and in the exit code, and what the gateway and the upstream saw."""
import json
import os
import pty
import re
import select
import signal
import subprocess
import tempfile
import time

import harness
from harness import Case

LLMUX = harness.binary("llmux")


def clean_env(**extra):
    """The test runner's environment without LLMUX_* (a developer's own settings must not leak
    into a test), plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
    env.update(extra)
    return env


def default_sigint():
    """In the child before exec: SIGINT as a shell gives it to a foreground command. A runner
    started as a background job of a script has it ignored, and an ignored SIGINT is inherited
    (and kept ignored by llmux, like nohup), which would make the Ctrl-C tests meaningless."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def json_lines(text):
    return [json.loads(line) for line in text.splitlines()]


def read_until(fd, pred, timeout):
    """Reads fd until pred(bytes so far) holds, EOF, or timeout; returns the bytes."""
    out = b""
    end = time.monotonic() + timeout
    while not pred(out):
        left = end - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:     # a pty master reads EIO once the child is gone
            break
        if not chunk:
            break
        out += chunk
    return out


class Terminal:
    """llmux on a pseudo-terminal: stdin, stdout and stderr are all the tty, as in a shell.
    Ctrl-C and Ctrl-D are typed, so the line discipline turns them into SIGINT and EOF."""

    def __init__(self, argv, env):
        pid, fd = pty.fork()
        if pid == 0:
            try:
                default_sigint()
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.seen = b""     # everything read so far
        self.mark = 0       # where the next expect() starts looking

    def type(self, text):
        os.write(self.fd, text.encode())

    def expect(self, needle, timeout=5.0):
        """Waits for needle after the last match; returns the text up to and including it."""
        needle = needle.encode()

        def found(more):
            return needle in (self.seen + more)[self.mark:]

        self.seen += read_until(self.fd, found, timeout)
        at = self.seen.find(needle, self.mark)
        if at < 0:
            raise AssertionError("%r never appeared on the terminal; it shows:\n%r"
                                 % (needle, self.seen[self.mark:]))
        got = self.seen[self.mark:at + len(needle)]
        self.mark = at + len(needle)
        return got.decode(errors="replace")

    def wait(self, timeout=5.0):
        """The exit code; the rest of the output goes to self.seen."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.seen += read_until(self.fd, lambda _: False, 0.05)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.pid = None
                return os.waitstatus_to_exitcode(status)
        raise AssertionError("llmux did not exit; the terminal shows:\n%r" % self.seen)

    def close(self):
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = None
        os.close(self.fd)


class CliCase(Case):
    def url(self):
        return "http://127.0.0.1:%d" % self.d.port

    def argv(self, args, url=True):
        return [LLMUX] + (["--url", self.url()] if url else []) + list(args)

    def llmux(self, *args, stdin=None, env=None, url=True, timeout=20):
        """Runs llmux to its end; stdin is never the runner's own (it may be a terminal)."""
        return subprocess.run(self.argv(args, url), input=stdin, capture_output=True, text=True,
                              timeout=timeout, env=clean_env(**(env or {})),
                              stdin=subprocess.DEVNULL if stdin is None else None)

    def spawn(self, *args, env=None, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("preexec_fn", default_sigint)
        p = subprocess.Popen(self.argv(args), env=clean_env(**(env or {})), **kw)
        self.addCleanup(self.reap, p)
        return p

    @staticmethod
    def reap(p):
        if p.poll() is None:
            p.kill()
        p.communicate()

    def input_file(self, text):
        f = tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="llmux-cli-", delete=False)
        f.write(text)
        f.close()
        self.addCleanup(os.unlink, f.name)
        return f.name

    def sent(self):
        """The JSON body the upstream received last."""
        return json.loads(self.mock.last()["body"])

    def assert_ok(self, p, stdout=None):
        self.assertEqual(p.returncode, 0, p.stderr)
        if stdout is not None:
            self.assertEqual(p.stdout, stdout)


class CliChatTest(CliCase):
    def setUp(self):
        # A live upstream connection first: the gateway serialises a burst to an upstream it
        # has no connection to (ColdStartTest shows it); the tests here are about the CLI.
        st, _, _ = self.d.chat("warm-up")
        self.assertEqual(st, 200)
        super().setUp()

    # --- chat ---------------------------------------------------------------------------

    def test_chat_prompt_from_arguments(self):
        p = self.llmux("chat", "-m", "m", "hello", "there")
        self.assert_ok(p, "echo: hello there\n")
        self.assertEqual(p.stderr, "")
        sent = self.sent()
        self.assertEqual(sent["messages"], [{"role": "user", "content": "hello there"}])
        self.assertEqual(sent["model"], "mock-gpt")
        # stdout is a pipe: the default is a whole answer
        self.assertIs(sent.get("stream", False), False)

    def test_chat_system_message_goes_first(self):
        p = self.llmux("chat", "-m", "m", "-s", "be brief", "why?")
        self.assert_ok(p, "echo: why?\n")
        self.assertEqual(self.sent()["messages"], [{"role": "system", "content": "be brief"},
                                                   {"role": "user", "content": "why?"}])

    def test_chat_streamed_and_whole_print_the_same_bytes(self):
        for model in ("m", "claude"):
            whole = self.llmux("chat", "-m", model, "--no-stream", "same @mock:stream=4")
            self.assertIs(self.sent().get("stream", False), False)
            streamed = self.llmux("chat", "-m", model, "--stream", "same @mock:stream=4")
            self.assertIs(self.sent()["stream"], True)
            self.assert_ok(whole, "echo: same @mock:stream=4\n")
            self.assert_ok(streamed, whole.stdout)
            self.assertEqual(streamed.stderr, "")

    def test_chat_stream_prints_tokens_as_they_arrive(self):
        p = self.spawn("chat", "-m", "m", "--stream", "tick @mock:stream=4,interval=400")
        first = read_until(p.stdout.fileno(), lambda b: len(b) > 0, 5)
        still_running = p.poll() is None
        rest, err = p.communicate(timeout=10)
        self.assertEqual(p.returncode, 0, err)
        self.assertTrue(first, "nothing was printed")
        self.assertTrue(still_running, "the first tokens only appeared at the end")
        self.assertEqual(first + rest, b"echo: tick @mock:stream=4,interval=400\n")
        self.assertLess(len(first), len(first + rest) - 1)

    def test_chat_json_prints_the_raw_response(self):
        p = self.llmux("chat", "-m", "m", "--json", "raw")
        self.assert_ok(p)
        body = json.loads(p.stdout)
        self.assertEqual(body["object"], "chat.completion")
        self.assertEqual(body["choices"][0]["message"]["content"], "echo: raw")
        self.assertIn("usage", body)

    def test_chat_json_stream_prints_one_chunk_per_line(self):
        p = self.llmux("chat", "-m", "m", "--json", "--stream", "raw @mock:stream=3")
        self.assert_ok(p)
        chunks = json_lines(p.stdout)
        self.assertGreaterEqual(len(chunks), 3)
        self.assertTrue(all(c["object"] == "chat.completion.chunk" for c in chunks))
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        self.assertEqual(text, "echo: raw @mock:stream=3")
        self.assertNotIn("[DONE]", p.stdout)

    def test_chat_prompt_from_stdin(self):
        p = self.llmux("chat", "-m", "m", stdin="line one\nline two\n\n")
        self.assert_ok(p, "echo: line one\nline two\n")
        self.assertEqual(self.sent()["messages"][-1]["content"], "line one\nline two")

    def test_chat_empty_prompt_is_a_usage_error(self):
        p = self.llmux("chat", "-m", "m", stdin="\n")
        self.assertEqual(p.returncode, 1)
        self.assertIn("prompt is empty", p.stderr)
        self.assertEqual(p.stdout, "")
        self.assertEqual(self.mock.stats()["received"], 0)

    def test_chat_model_and_url_from_environment(self):
        p = self.llmux("chat", "from env", url=False,
                       env={"LLMUX_URL": self.url(), "LLMUX_MODEL": "claude"})
        self.assert_ok(p, "echo: from env\n")
        self.assertEqual(self.mock.last()["path"], "/v1/messages")

    def test_chat_without_model_says_how_to_find_one(self):
        p = self.llmux("chat", "hi")
        self.assertEqual(p.returncode, 1)
        self.assertIn("llmux models", p.stderr)
        self.assertEqual(self.mock.stats()["received"], 0)

    def test_chat_unknown_model_is_an_api_error(self):
        p = self.llmux("chat", "-m", "nope", "hi")
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stdout, "")
        self.assertRegex(p.stderr, r"^llmux: HTTP 404 model_not_found: .*'nope'")
        self.assertEqual(self.mock.stats()["received"], 0)

    def test_chat_upstream_failure_is_an_api_error(self):
        p = self.llmux("chat", "-m", "m", "x @mock:status=500")
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stdout, "")
        self.assertIn("HTTP 502", p.stderr)
        self.assertNotIn("sk-upstream-secret", p.stderr)

    def test_chat_stream_cut_short_is_an_error(self):
        p = self.llmux("chat", "-m", "m", "--stream", "x @mock:stream=10,reset_after=3")
        self.assertEqual(p.returncode, 2)
        full = "echo: x @mock:stream=10,reset_after=3"
        self.assertTrue(p.stdout.endswith("\n") and full.startswith(p.stdout[:-1])
                        and len(p.stdout) - 1 < len(full), p.stdout)
        self.assertRegex(p.stderr, r"^llmux: the stream ended with an error: ")

    def test_chat_rate_limit_shows_retry_after(self):
        p = self.llmux("chat", "-m", "m", "x @mock:status=429,retry_after=7")
        self.assertEqual(p.returncode, 2)
        self.assertIn("HTTP 429", p.stderr)
        self.assertIn("retry after 7 s", p.stderr)

    def test_connection_refused_exits_3(self):
        url = "http://127.0.0.1:%d" % harness.free_port()
        for args in (["chat", "-m", "m", "hi"], ["models"], ["health"]):
            p = self.llmux("--url", url, *args, url=False)
            self.assertEqual(p.returncode, 3, args)
            self.assertEqual(p.stdout, "")
            self.assertIn("cannot reach the gateway", p.stderr)
            self.assertIn(url, p.stderr)

    def test_timeout_gives_504_and_aborts_upstream(self):
        t0 = time.monotonic()
        p = self.llmux("--timeout", "300", "chat", "-m", "m", "slow @mock:delay=5000")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("HTTP 504", p.stderr)
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertEqual(self.mock.wait_stats(lambda s: s["aborted"] == 1)["aborted"], 1)

    # --- Ctrl-C -------------------------------------------------------------------------

    def interrupt_after_upstream_has(self, p, n):
        s = self.mock.wait_stats(lambda s: s["received"] >= n, timeout=5)
        self.assertEqual(s["received"], n)
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=5)
        return out, err, time.monotonic() - t0

    def test_ctrl_c_aborts_the_request_upstream(self):
        p = self.spawn("chat", "-m", "m", "slow @mock:delay=20000")
        out, err, took = self.interrupt_after_upstream_has(p, 1)
        self.assertEqual(p.returncode, 130, err)
        self.assertLess(took, 1.0)
        self.assertIn(b"interrupted", err)
        self.assertEqual(out, b"")
        s = self.mock.wait_stats(lambda s: s["aborted"] == 1)
        self.assertEqual((s["aborted"], s["completed"]), (1, 0))

    def test_ctrl_c_during_a_stream_keeps_what_was_printed(self):
        p = self.spawn("chat", "-m", "m", "--stream", "long @mock:stream=100,interval=20")
        first = read_until(p.stdout.fileno(), lambda b: len(b) > 0, 5)
        out, err, took = self.interrupt_after_upstream_has(p, 1)
        self.assertEqual(p.returncode, 130, err)
        self.assertLess(took, 1.0)
        printed = first + out
        full = b"echo: long @mock:stream=100,interval=20"
        # what was printed stays, and the half-printed answer is ended with a newline so the
        # shell prompt does not land after it
        self.assertTrue(printed.endswith(b"\n"), printed)
        self.assertTrue(full.startswith(printed[:-1]) and 0 < len(printed) - 1 < len(full),
                        printed)
        self.assertEqual(self.mock.wait_stats(lambda s: s["aborted"] == 1)["aborted"], 1)

    def test_ctrl_c_aborts_every_gather_item(self):
        f = self.input_file("a @mock:delay=20000\nb @mock:delay=20000\n")
        p = self.spawn("gather", "-m", "m", f)
        _, err, took = self.interrupt_after_upstream_has(p, 2)
        self.assertEqual(p.returncode, 130, err)
        self.assertLess(took, 1.0)
        self.assertEqual(self.mock.wait_stats(lambda s: s["aborted"] == 2)["aborted"], 2)

    def test_ctrl_c_ignored_on_entry_stays_ignored(self):
        # nohup, or a background job of a script: the request runs to its end
        ignore = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
        p = self.spawn("chat", "-m", "m", "slow @mock:delay=500", preexec_fn=ignore)
        self.mock.wait_stats(lambda s: s["received"] >= 1, timeout=5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=5)
        self.assertEqual((p.returncode, out), (0, b"echo: slow @mock:delay=500\n"), err)
        self.assertEqual(self.mock.stats()["aborted"], 0)

    # --- gather -------------------------------------------------------------------------

    MIXED = ("slow @mock:delay=400\n"
             "broken @mock:status=500\n"
             "\n"
             '{"messages": [{"role": "user", "content": "a body"}]}\n'
             '{"model": "claude", "messages": [{"role": "user", "content": "to claude"}]}\n'
             "fast\n")

    def check_mixed(self, lines):
        by_index = {l["index"]: l for l in lines}
        self.assertEqual(sorted(by_index), [0, 1, 2, 3, 4])
        self.assertEqual([by_index[i]["status"] for i in range(5)], [200, 502, 200, 200, 200])
        self.assertEqual(by_index[0]["content"], "echo: slow @mock:delay=400")
        self.assertEqual(by_index[1]["error"]["code"], "upstream_status")
        self.assertNotIn("content", by_index[1])
        self.assertEqual(by_index[2]["content"], "echo: a body")
        self.assertEqual(by_index[3]["content"], "echo: to claude")
        self.assertEqual(by_index[4]["content"], "echo: fast")

    def test_gather_mixed_outcomes_in_input_order(self):
        p = self.llmux("gather", "-m", "m", self.input_file(self.MIXED))
        self.assertEqual(p.returncode, 2, p.stderr)
        lines = json_lines(p.stdout)
        self.assertEqual([l["index"] for l in lines], [0, 1, 2, 3, 4])
        self.check_mixed(lines)
        self.assertIn("1 of 5 items failed", p.stderr)
        # five items, five upstream calls: blank lines are not requests
        self.assertEqual(self.mock.stats()["received"], 5)

    def test_gather_as_completed(self):
        p = self.llmux("gather", "-m", "m", "--as-completed", self.input_file(self.MIXED))
        self.assertEqual(p.returncode, 2, p.stderr)
        lines = json_lines(p.stdout)
        self.check_mixed(lines)
        self.assertEqual(lines[-1]["index"], 0, "the slow item should come out last")

    def test_gather_from_stdin_all_ok(self):
        p = self.llmux("gather", "-m", "m", "-c", "2", stdin="one\ntwo\nthree\n")
        self.assert_ok(p)
        self.assertEqual(json_lines(p.stdout), [
            {"index": 0, "status": 200, "content": "echo: one"},
            {"index": 1, "status": 200, "content": "echo: two"},
            {"index": 2, "status": 200, "content": "echo: three"}])
        self.assertEqual(p.stderr, "")

    def test_gather_concurrency_limit_is_sent(self):
        f = self.input_file("a @mock:delay=300\nb @mock:delay=300\nc @mock:delay=300\n")
        t0 = time.monotonic()
        p = self.llmux("gather", "-m", "m", "-c", "1", f)
        self.assert_ok(p)
        self.assertGreaterEqual(time.monotonic() - t0, 0.85, "items ran in parallel under -c 1")

    def test_gather_fail_fast_cancels_the_rest(self):
        f = self.input_file("slow @mock:delay=20000\nbroken @mock:status=500\n")
        t0 = time.monotonic()
        p = self.llmux("gather", "-m", "m", "--fail-fast", f)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertRegex(p.stderr, r"item 1: .*upstream_status")
        self.assertEqual(self.mock.wait_stats(lambda s: s["aborted"] == 1)["aborted"], 1)

    def test_gather_first_prints_the_winner_only(self):
        f = self.input_file("slow @mock:delay=20000\nfast\n")
        p = self.llmux("gather", "-m", "m", "--first", f)
        self.assert_ok(p, '{"index":1,"status":200,"content":"echo: fast"}\n')
        self.assertEqual(p.stderr, "")
        self.assertEqual(self.mock.wait_stats(lambda s: s["aborted"] == 1)["aborted"], 1)

    def test_gather_first_with_no_success_exits_2(self):
        f = self.input_file("a @mock:status=500\nb @mock:status=500\n")
        p = self.llmux("gather", "-m", "m", "--first", f)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertRegex(p.stderr, r"item \d: .*upstream_status")
        self.assertTrue(all(l["status"] != 200 for l in json_lines(p.stdout)), p.stdout)

    def test_gather_timeout_reports_unfinished_items_as_504(self):
        f = self.input_file("slow @mock:delay=5000\nfast\n")
        t0 = time.monotonic()
        p = self.llmux("--timeout", "300", "gather", "-m", "m", f)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertLess(time.monotonic() - t0, 3.0)
        lines = json_lines(p.stdout)
        self.assertEqual([(l["index"], l["status"]) for l in lines], [(0, 504), (1, 200)])
        self.assertEqual(self.mock.wait_stats(lambda s: s["aborted"] == 1)["aborted"], 1)

    def test_gather_bad_json_line_stops_before_sending(self):
        f = self.input_file("fine\n{not json\n")
        p = self.llmux("gather", "-m", "m", f)
        self.assertEqual(p.returncode, 1)
        self.assertIn(f + ":2:", p.stderr)
        self.assertEqual(p.stdout, "")
        self.assertEqual(self.mock.stats()["received"], 0)

    def test_gather_progress_line_on_a_terminal(self):
        master, slave = pty.openpty()
        self.addCleanup(os.close, master)
        p = self.spawn("gather", "-m", "m", self.input_file(
            "a @mock:delay=700\nb\nc @mock:status=500\n"), stderr=slave)
        os.close(slave)
        out, _ = p.communicate(timeout=10)
        err = read_until(master, lambda _: False, 0.3).decode()
        self.assertEqual(p.returncode, 2)
        self.assertRegex(err, r"gather: \d/3 done, \d failed, \d in flight")
        self.assertIn("\r\x1b[K", err)
        self.assertIn("gather: 2 ok, 1 failed of 3", err)
        # stdout stays clean JSON lines
        self.assertEqual([l["index"] for l in json_lines(out.decode())], [0, 1, 2])

    # --- models, health, metrics, version, usage ----------------------------------------

    def test_models(self):
        p = self.llmux("models")
        self.assert_ok(p, "m\nm-retry\nclaude\ndead\nfallback\n")
        p = self.llmux("models", "--json")
        self.assert_ok(p)
        body = json.loads(p.stdout)
        self.assertEqual(body["object"], "list")
        self.assertEqual(len(body["data"]), 5)

    def test_health(self):
        self.assert_ok(self.llmux("health"), "ok\n")
        p = self.llmux("health", "--json")
        self.assert_ok(p)
        self.assertEqual(json.loads(p.stdout), {"status": "ok"})
        st, _, body = self.d.request("GET", "/readyz")
        p = self.llmux("health", "--ready")
        self.assertEqual(p.returncode, 0 if st == 200 else 2, p.stderr)
        self.assertEqual(p.stdout, json.loads(body)["status"] + "\n")

    def test_metrics(self):
        self.assert_ok(self.llmux("chat", "-m", "m", "count me"))
        p = self.llmux("metrics")
        self.assert_ok(p)
        metrics = harness.parse_metrics(p.stdout)
        self.assertGreaterEqual(metrics['llmux_http_requests_total{route="chat",status="200"}'], 1)

    def test_version(self):
        for args in (["--version"], ["chat", "--version"]):
            p = self.llmux(*args)
            self.assert_ok(p)
            self.assertRegex(p.stdout, r"^llmux \d+\.\d+\.\d+\n$")

    def test_help(self):
        p = self.llmux("--help")
        self.assert_ok(p)
        for cmd in ("chat", "gather", "models", "health", "metrics"):
            self.assertIn(cmd, p.stdout)
        for args in (["help", "gather"], ["gather", "--help"], ["-v", "help", "gather"]):
            p = self.llmux(*args)
            self.assert_ok(p)
            self.assertTrue(p.stdout.startswith("Usage: llmux gather"), p.stdout)
            self.assertEqual(p.stderr, "", "help must not run the command")

    def test_usage_errors_exit_1_and_send_nothing(self):
        cases = [
            [],
            ["bogus"],
            ["chat", "--frob", "hi"],
            ["chat", "-m"],
            ["--timeout", "soon", "health"],
            ["gather", "-m", "m", "-c", "0", "f"],
            ["gather", "-m", "m", "--first", "--fail-fast", "f"],
            ["gather", "-m", "m", "a", "b"],
            ["gather", "-m", "m", "/nonexistent/prompts.txt"],
            ["models", "extra"],
            ["metrics", "--ready"],
        ]
        for args in cases:
            p = self.llmux(*args)
            self.assertEqual(p.returncode, 1, (args, p.stderr))
            self.assertEqual(p.stdout, "", args)
            self.assertTrue(p.stderr.startswith("llmux: ") or p.stderr.startswith("Usage:"),
                            (args, p.stderr))
        self.assertEqual(self.mock.stats()["received"], 0)

    # --- interactive ----------------------------------------------------------------------

    def terminal(self, *args):
        t = Terminal(self.argv(args), clean_env())
        self.addCleanup(t.close)
        return t

    def test_interactive_session_keeps_the_conversation(self):
        t = self.terminal("chat", "-m", "m", "-s", "sys")
        t.expect("> ")
        t.type("first question\n")
        t.expect("echo: first question")
        t.expect("> ")
        t.type("second\n")
        t.expect("echo: second")
        t.expect("> ")
        sent = self.sent()
        self.assertIs(sent["stream"], True, "a terminal gets a streamed answer")
        self.assertEqual(sent["messages"], [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "echo: first question"},
            {"role": "user", "content": "second"}])
        t.type("\x04")      # Ctrl-D at the prompt ends the session
        self.assertEqual(t.wait(), 0)

    def test_interactive_ctrl_c_stops_a_reply_and_forgets_the_turn(self):
        t = self.terminal("chat", "-m", "m")
        t.expect("> ")
        t.type("long @mock:stream=100,interval=20\n")
        t.expect("echo: lo")
        t.type("\x03")      # Ctrl-C while the reply streams
        t.expect("interrupted")
        t.expect("> ")
        self.assertEqual(self.mock.wait_stats(lambda s: s["aborted"] == 1)["aborted"], 1)
        t.type("after\n")
        t.expect("echo: after")
        t.expect("> ")
        self.assertEqual(self.sent()["messages"], [{"role": "user", "content": "after"}])
        t.type("\x03")      # Ctrl-C at the prompt ends the session
        self.assertEqual(t.wait(), 130)


class CliKeyTest(CliCase):
    extra = """
keys:
  - name: team-a
    key: sk-client-secret-789
    models: [m]
"""
    KEY = "sk-client-secret-789"

    def test_verbose_shows_request_id_but_never_the_key(self):
        p = self.llmux("-v", "--key", self.KEY, "chat", "-m", "m", "hi")
        self.assert_ok(p, "echo: hi\n")
        self.assertNotIn(self.KEY, p.stdout + p.stderr)
        self.assertIn("* key: set", p.stderr)
        self.assertIn("* upstream: mock", p.stderr)
        rid = re.search(r"^\* request id: (\S+)$", p.stderr, re.M)
        self.assertTrue(rid, p.stderr)
        # the id shown is the one the gateway logged for this request, under the key's name
        logged = self.d.wait_log(rid.group(1))
        self.assertTrue(logged, "request id %s not in the daemon log" % rid.group(1))
        self.assertIn('"key":"team-a"', logged[-1])
        self.assertEqual(self.mock.last()["headers"]["authorization"],
                         "Bearer sk-upstream-secret-123")

    def test_key_from_environment_and_never_printed(self):
        env = {"LLMUX_API_KEY": self.KEY}
        for args in (["-v", "models"], ["-v", "gather", "-m", "m", "-"],
                     ["-v", "chat", "-m", "m", "--stream", "hi"], ["-v", "metrics"]):
            p = self.llmux(*args, env=env, stdin="hello\n")
            self.assert_ok(p)
            self.assertNotIn(self.KEY, p.stdout + p.stderr, args)
            self.assertIn("* request id: ", p.stderr, args)
        self.assertEqual(self.llmux("models", env=env).stdout, "m\n")

    def test_missing_or_wrong_key_is_an_api_error(self):
        p = self.llmux("chat", "-m", "m", "hi")
        self.assertEqual(p.returncode, 2)
        self.assertIn("HTTP 401", p.stderr)
        p = self.llmux("-v", "--key", "sk-wrong-secret-000", "chat", "-m", "m", "hi")
        self.assertEqual(p.returncode, 2)
        self.assertIn("HTTP 401", p.stderr)
        self.assertNotIn("sk-wrong-secret-000", p.stdout + p.stderr)
        self.assertEqual(self.mock.stats()["received"], 0)

    def test_model_outside_the_key_is_refused(self):
        p = self.llmux("--key", self.KEY, "chat", "-m", "claude", "hi")
        self.assertEqual(p.returncode, 2)
        self.assertIn("HTTP 403", p.stderr)


class ColdStartTest(CliCase):
    """A gather right after the daemon starts: the items must run side by side, so with
    --as-completed the fast ones come out before the slow one."""

    def test_first_gather_runs_items_in_parallel(self):
        f = self.input_file("slow @mock:delay=800\nfast one\nfast two\n")
        t0 = time.monotonic()
        p = self.llmux("gather", "-m", "m", "--as-completed", f)
        took = time.monotonic() - t0
        self.assert_ok(p)
        self.assertEqual([l["index"] for l in json_lines(p.stdout)][-1], 0,
                         "the fast items waited for the slow one")
        self.assertLess(took, 1.3)
