"""The documented install works as written (docs/service.md): `make install` into a DESTDIR with
PREFIX=/usr gives a unit whose paths are that prefix's, and the installed example
configuration passes `llmuxd -t` with the installed environment example loaded, as systemd's
EnvironmentFile= would."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import harness


def read_env_file(path):
    """NAME=value lines as systemd's EnvironmentFile= reads them (comments and blanks skipped,
    one level of quotes removed)."""
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            name, value = line.split("=", 1)
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            env[name] = value
    return env


@unittest.skipUnless(shutil.which("make"), "make is not installed")
class InstallTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="llmux-destdir-")
        cls.make("install", "PREFIX=/usr", "DESTDIR=" + cls.root)

    @classmethod
    def make(cls, *args):
        # -o: install what this build made, never rebuild it (an ASan build has other flags)
        b = harness.BUILD
        p = subprocess.run(["make", "--no-print-directory", "-C", harness.ROOT, "BUILD=" + b,
                            "-o", b + "/llmuxd", "-o", b + "/llmux", *args],
                           capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            raise AssertionError("make %s failed:\n%s%s" % (args, p.stdout, p.stderr))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, True)
        cls.make(harness.BUILD + "/llmux.service")     # back to the default PREFIX

    def at(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def test_unit_paths_follow_prefix(self):
        with open(self.at("/usr/lib/systemd/system/llmux.service")) as f:
            unit = f.read()
        execs = re.findall(r"^Exec(?:Start|Reload)=(\S+)", unit, re.M)
        self.assertIn("/usr/bin/llmuxd", execs)
        self.assertNotIn("/usr/local", unit)
        self.assertNotIn("@", "".join(execs))
        self.assertTrue(os.access(self.at("/usr/bin/llmuxd"), os.X_OK))
        self.assertTrue(os.path.exists(self.at("/usr/lib/systemd/system/llmux.socket")))
        self.assertTrue(os.path.exists(self.at("/usr/share/man/man8/llmuxd.8")))

    def test_documented_steps_pass_the_check(self):
        # docs/service.md: copy the example to llmux.yaml, the env example to llmux.env
        conf = self.at("/etc/llmux/llmux.yaml")
        shutil.copy(self.at("/etc/llmux/llmux.yaml.example"), conf)
        env = read_env_file(self.at("/etc/llmux/llmux.env.example"))
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("LLMUX_", "OPENAI",
                                                                          "ANTHROPIC", "VLLM"))}
        p = subprocess.run([self.at("/usr/bin/llmuxd"), "-t", "-c", conf], capture_output=True,
                           text=True, timeout=10, env=dict(clean, **env))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("configuration OK", p.stdout)
        # every ${NAME} without a default in the example is defined by the env example
        with open(conf) as f:
            text = "".join(l.split("#", 1)[0] + "\n" for l in f)    # comments aside
            needed = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
        self.assertIn("LLMUX_KEY_BATCH", needed)
        self.assertEqual(needed - set(env), set())
