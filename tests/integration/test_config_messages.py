"""What `llmuxd -t` and a reload tell a person: YAML mistakes in plain words at the right
line, unknown upstreams listed, durations in the units written, secrets without a default
hint, secrets read from files (systemd LoadCredential=), the open-gateway warning, and the
settings a reload cannot apply."""
import os
import signal
import subprocess
import tempfile
import unittest

from harness import Daemon, Mock, binary, free_port

BASE = """listen: ["127.0.0.1:%d"]
upstreams:
  - name: openai
    base_url: http://127.0.0.1:1/v1
  - name: local
    base_url: http://127.0.0.1:2/v1
models:
  - name: m
    targets: [{upstream: openai}]
keys:
  - name: team
    key: sk-team-1
"""


class CheckTest(unittest.TestCase):
    def check(self, text, env=None, name="llmux.yaml"):
        d = tempfile.mkdtemp(prefix="llmux-check-")
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write(text)
        base = {k: v for k, v in os.environ.items()
                if k not in ("CREDENTIALS_DIRECTORY", "LLMUX_UNSET_SECRET")}
        p = subprocess.run([binary("llmuxd"), "-t", "-c", path], capture_output=True, text=True,
                           timeout=10, env=dict(base, **(env or {})))
        return p, path

    def assert_error(self, text, where, words, env=None):
        p, path = self.check(text, env)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("%s:%s" % (path, where), p.stderr)
        for w in words:
            self.assertIn(w, p.stderr)
        return p.stderr

    def test_tab_indentation(self):
        self.assert_error(BASE % 1 + "log:\n\tlevel: info\n", "14:1: ",
                          ["a tab is not allowed for indentation"])

    def test_missing_colon_points_at_its_line(self):
        text = BASE % 1 + "limits:\n  queue 10\n  max_inflight: 5\n"
        self.assert_error(text, "14:3: ", ["missing ':' after the key on this line"])

    def test_over_indented_key(self):
        text = BASE % 1 + "limits:\n  queue: 10\n   max_inflight: 5\n"
        self.assert_error(text, "15:", ["check the indentation of this line"])

    def test_unknown_upstream_lists_the_upstreams(self):
        text = (BASE % 1).replace("{upstream: openai}", "{upstream: claude}")
        err = self.assert_error(text, "9:", ['unknown upstream "claude"'])
        self.assertIn('the upstreams are: "openai", "local"', err)

    def test_durations_as_written(self):
        err = self.assert_error(BASE % 1 + "timeouts: {default: 15m, max: 5m}\n", "13:",
                                ["timeouts.default: 15m must not exceed timeouts.max (5m)"])
        # After the file's location: a random temp directory's name may hold "ms".
        message = err.split("llmux.yaml:", 1)[-1]
        self.assertNotIn("ms", message.replace("timeouts", ""))

    def test_unset_secret_suggests_no_default(self):
        text = (BASE % 1).replace("key: sk-team-1", "key: ${LLMUX_UNSET_SECRET}")
        err = self.assert_error(text, "12:", ["LLMUX_UNSET_SECRET is not set", "key_file:"])
        self.assertNotIn(":-", err)

    def test_no_keys_warns(self):
        text = (BASE % 1).split("keys:")[0]
        p, _ = self.check(text)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("warning: no keys are configured", p.stderr)
        p, _ = self.check(text.replace("127.0.0.1:1", "0.0.0.0:1"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("not loopback only", p.stderr)
        p, _ = self.check(BASE % 1)
        self.assertEqual((p.returncode, p.stderr), (0, ""))


class SecretFileTest(unittest.TestCase):
    """api_key_file: and key_file:, as systemd's LoadCredential= hands them over."""

    def setUp(self):
        self.mock = Mock()
        self.addCleanup(self.mock.stop)
        self.creds = tempfile.mkdtemp(prefix="llmux-creds-")
        with open(os.path.join(self.creds, "team-key"), "w") as f:
            f.write("sk-from-file\n")               # trailing newline, as echo writes it
        with open(os.path.join(self.creds, "upstream-key"), "w") as f:
            f.write("sk-ant-from-file\r\n")

    def config(self, key_file="team-key"):
        return ('listen: ["127.0.0.1:{port}"]\nupstreams:\n  - name: claude\n'
                '    provider: anthropic\n    base_url: http://127.0.0.1:%d\n'
                '    api_key_file: upstream-key\nmodels:\n  - name: c\n'
                '    targets: [{upstream: claude, model: claude-test}]\n'
                'keys:\n  - name: team\n    key_file: %s\n' % (self.mock.port, key_file))

    def test_keys_from_credentials_directory(self):
        d = Daemon(self.mock, text=self.config(), env={"CREDENTIALS_DIRECTORY": self.creds})
        self.addCleanup(d.stop)
        st, _, _ = d.chat("x", model="c", headers={"Authorization": "Bearer sk-from-file"})
        self.assertEqual(st, 200)
        self.assertEqual(self.mock.last()["headers"]["x-api-key"], "sk-ant-from-file")
        st, _, _ = d.chat("x", model="c", headers={"Authorization": "Bearer sk-from-fil"})
        self.assertEqual(st, 401)

    def run_check(self, text, env):
        path = os.path.join(tempfile.mkdtemp(prefix="llmux-check-"), "llmux.yaml")
        with open(path, "w") as f:
            f.write(text.replace("{port}", str(free_port())))
        base = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
        return subprocess.run([binary("llmuxd"), "-t", "-c", path], capture_output=True,
                              text=True, timeout=10, env=dict(base, **env))

    def test_clear_errors(self):
        p = self.run_check(self.config(), {})
        self.assertEqual(p.returncode, 1)
        self.assertIn("api_key_file: relative path needs $CREDENTIALS_DIRECTORY", p.stderr)
        p = self.run_check(self.config("missing"), {"CREDENTIALS_DIRECTORY": self.creds})
        self.assertEqual(p.returncode, 1)
        self.assertIn("keys[0].key_file: cannot open \"%s/missing\": No such file"
                      % self.creds, p.stderr)
        open(os.path.join(self.creds, "empty"), "w").close()
        p = self.run_check(self.config("empty"), {"CREDENTIALS_DIRECTORY": self.creds})
        self.assertIn("is empty", p.stderr)
        p = self.run_check(self.config(os.path.join(self.creds, "team-key")),
                           {"CREDENTIALS_DIRECTORY": self.creds})
        self.assertEqual(p.returncode, 0, p.stderr)      # an absolute path works as well
        both = self.config().replace("    key_file:", "    key: sk-x\n    key_file:")
        p = self.run_check(both, {"CREDENTIALS_DIRECTORY": self.creds})
        self.assertIn("not both", p.stderr)
        self.assertNotIn("sk-from-file", p.stderr + p.stdout)


class ReloadReportTest(unittest.TestCase):
    def test_start_only_settings_are_named(self):
        mock = Mock()
        self.addCleanup(mock.stop)
        text = ('listen: ["127.0.0.1:{port}"]\nworkers: 2\nupstreams:\n'
                '  - {name: u, base_url: "http://127.0.0.1:%d/v1"}\n'
                'models:\n  - {name: m, targets: [{upstream: u}]}\n' % mock.port)
        d = Daemon(mock, text=text)
        self.addCleanup(d.stop)
        new = text.replace("{port}", str(d.port)).replace("workers: 2", "workers: 3").replace(
            "base_url:", "max_connections: 2000, base_url:")
        d.write_config(new)
        d.signal(signal.SIGHUP)
        self.assertTrue(d.wait_log("configuration reloaded", 5))
        logs = d.logs()
        self.assertIn("reload: workers: 3 takes effect at restart (running with 2)", logs)
        self.assertIn("reload: upstreams[u].max_connections: 2000 takes effect at restart", logs)
        self.assertEqual(d.chat("still", model="m")[0], 200)
        # a reload that changes nothing start-only says nothing more
        before = d.logs().count("takes effect at restart")
        d.write_config(new.replace("workers: 3", "workers: 2").replace(
            "max_connections: 2000, ", ""))
        d.signal(signal.SIGHUP)
        self.assertTrue(len(d.wait_log("configuration reloaded", 5)) >= 1)
        import time
        time.sleep(0.3)
        self.assertEqual(d.logs().count("takes effect at restart"), before)
