"""The Debian package (`make deb`): built, then taken apart — contents and permissions, control
fields and Depends:, the shipped config accepted by the packaged llmuxd with no secrets set,
install/remove/purge with dpkg into a scratch root, the maintainer scripts' systemd side run
against stub commands, and lintian."""
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import unittest

import harness

ROOT = harness.ROOT
NEEDED = ("dpkg-deb", "dpkg-buildflags", "dpkg-shlibdeps")

# path in the package: (mode, owner:group)
FILES = {
    "usr/bin/llmuxd": (0o755, "root:root"),
    "usr/bin/llmux": (0o755, "root:root"),
    "usr/share/man/man1/llmux.1.gz": (0o644, "root:root"),
    "usr/share/man/man8/llmuxd.8.gz": (0o644, "root:root"),
    "lib/systemd/system/llmux.service": (0o644, "root:root"),
    "lib/systemd/system/llmux.socket": (0o644, "root:root"),
    "usr/lib/sysusers.d/llmux.conf": (0o644, "root:root"),
    "etc/llmux/llmux.yaml": (0o644, "root:root"),
    "etc/llmux/llmux.env": (0o640, "root:root"),     # group llmux: set by postinst
    "usr/share/doc/llmux/copyright": (0o644, "root:root"),
    "usr/share/doc/llmux/changelog.gz": (0o644, "root:root"),
    "usr/share/doc/llmux/examples/llmux.example.yaml": (0o644, "root:root"),
}
STUBS = ("systemd-sysusers", "dpkg-statoverride", "chown", "chmod", "rm", "rmdir", "systemctl",
         "deb-systemd-invoke", "deb-systemd-helper")


def version():
    with open(os.path.join(ROOT, "VERSION")) as f:
        return f.read().strip()


@unittest.skipUnless(all(shutil.which(t) for t in NEEDED), "needs dpkg-dev")
class PackageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # A make run by `make test` passes its variables (SAN=1 under `make asan`) down in
        # MAKEFLAGS; the package is built the same way whoever asks.
        env = {k: v for k, v in os.environ.items()
               if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
        p = subprocess.run(["make", "-s", "--no-print-directory", "deb"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            raise RuntimeError("make deb failed:\n" + p.stdout + p.stderr)
        cls.deb = os.path.join(ROOT, p.stdout.strip().splitlines()[-1])
        cls.dir = tempfile.mkdtemp(prefix="llmux-deb-")
        cls.root = os.path.join(cls.dir, "root")
        cls.control = os.path.join(cls.dir, "DEBIAN")
        subprocess.run(["dpkg-deb", "-x", cls.deb, cls.root], check=True)
        subprocess.run(["dpkg-deb", "-e", cls.deb, cls.control], check=True)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, True)

    def field(self, name):
        return subprocess.run(["dpkg-deb", "-f", self.deb, name], capture_output=True,
                              text=True, check=True).stdout.strip()

    def test_name_version_and_depends(self):
        arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True,
                              text=True, check=True).stdout.strip()
        self.assertEqual(os.path.basename(self.deb), "llmux_%s_%s.deb" % (version(), arch))
        self.assertEqual(self.field("Version"), version())
        deps = [d.split()[0] for d in self.field("Depends").split(", ")]
        for lib in ("libc6", "libcurl4", "libev4", "libjansson4", "libyaml-0-2", "libsystemd0",
                    "systemd"):
            self.assertIn(lib, deps)
        out = subprocess.run([os.path.join(self.root, "usr/bin/llmuxd"), "-V"],
                             capture_output=True, text=True).stdout
        self.assertEqual(out.strip(), "llmuxd " + version())

    def test_contents_and_permissions(self):
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", self.deb], capture_output=True,
                             check=True).stdout
        members = {m.name.lstrip("./"): m for m in tarfile.open(fileobj=io.BytesIO(tar))}
        for path, (mode, owner) in FILES.items():
            self.assertIn(path, members)
            m = members[path]
            self.assertEqual((m.mode, "%s:%s" % (m.uname, m.gname)), (mode, owner), path)
        for name, m in members.items():
            self.assertFalse(m.mode & 0o022, "%s is group/world writable" % name)
        with open(os.path.join(self.control, "conffiles")) as f:
            self.assertEqual(f.read().split(), ["/etc/llmux/llmux.yaml", "/etc/llmux/llmux.env"])
        out = subprocess.run(["file", "-b", os.path.join(self.root, "usr/bin/llmuxd")],
                             capture_output=True, text=True).stdout
        if out:
            self.assertIn("stripped", out)
            self.assertNotIn("not stripped", out)

    def test_shipped_config_passes_check_with_no_secrets(self):
        conf = os.path.join(self.root, "etc/llmux/llmux.yaml")
        p = subprocess.run([os.path.join(self.root, "usr/bin/llmuxd"), "-t", "-c", conf],
                           capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("configuration OK", p.stdout)
        with open(os.path.join(self.root, "etc/llmux/llmux.env")) as f:
            live = [l for l in f if l.strip() and not l.startswith("#")]
        self.assertEqual(live, [], "the shipped secrets file sets nothing")

    def test_unit_paths_and_user(self):
        with open(os.path.join(self.root, "lib/systemd/system/llmux.service")) as f:
            unit = f.read()
        self.assertIn("\nExecStart=/usr/bin/llmuxd -c /etc/llmux/llmux.yaml\n", unit)
        self.assertIn("\nExecReload=/usr/bin/llmuxd -t -c /etc/llmux/llmux.yaml\n", unit)
        self.assertNotIn("@BINDIR@", unit)
        self.assertIn("\nUser=llmux\n", unit)
        self.assertIn("\nStateDirectory=llmux\n", unit)
        self.assertNotIn("\nDynamicUser=", unit)
        with open(os.path.join(self.root, "usr/lib/sysusers.d/llmux.conf")) as f:
            users = [l.split() for l in f if l.strip() and not l.startswith("#")]
        self.assertEqual(users[0][:2], ["u", "llmux"])

    def run_script(self, name, *args):
        """Runs a maintainer script with every command it may call stubbed (and a directory
        standing in for /run/systemd/system); returns the calls it made."""
        tmp = tempfile.mkdtemp(prefix="llmux-maint-", dir=self.dir)
        bindir, rundir, log = (os.path.join(tmp, n) for n in ("bin", "run", "calls"))
        os.makedirs(bindir)
        os.makedirs(rundir)
        for stub in STUBS:
            path = os.path.join(bindir, stub)
            rc = 1 if stub == "dpkg-statoverride" else 0     # no override registered
            with open(path, "w") as f:
                f.write('#!/bin/sh\necho "%s $*" >>%s\nexit %d\n' % (stub, log, rc))
            os.chmod(path, 0o755)
        with open(os.path.join(self.control, name)) as f:
            text = f.read().replace("/run/systemd/system", rundir)
        p = subprocess.run(["/bin/sh", "-s", *args], input=text, capture_output=True,
                           text=True, env={"PATH": bindir})
        self.assertEqual(p.returncode, 0, p.stderr)
        if not os.path.exists(log):
            return []
        with open(log) as f:
            return f.read().splitlines()

    def test_install_starts_nothing_upgrade_restarts_a_running_service(self):
        calls = self.run_script("postinst", "configure", "")
        self.assertIn("systemd-sysusers llmux.conf", calls)
        self.assertIn("chown root:llmux /etc/llmux/llmux.env", calls)
        self.assertIn("chmod 0640 /etc/llmux/llmux.env", calls)
        self.assertIn("systemctl --system daemon-reload", calls)
        self.assertFalse([c for c in calls if re.search(r"\b(enable|start|restart)\b", c)],
                         calls)
        calls = self.run_script("postinst", "configure", "0.0.9")
        self.assertIn("deb-systemd-invoke restart llmux.service", calls)
        self.assertFalse([c for c in calls if "enable" in c], calls)

    def test_prerm_stops_the_service(self):
        self.assertIn("deb-systemd-invoke stop llmux.socket llmux.service",
                      self.run_script("prerm", "remove"))

    def dpkg(self, root, *args):
        p = subprocess.run(["dpkg", "--root=" + root, "--force-script-chrootless",
                            "--force-depends", "--log=/dev/null", *args],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("systemd-sysusers"),
                         "needs root and systemd-sysusers")
    def test_install_remove_purge_in_a_scratch_root(self):
        root = tempfile.mkdtemp(prefix="dpkg-root-", dir=self.dir)
        for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"):
            os.makedirs(os.path.join(root, d))
        open(os.path.join(root, "var/lib/dpkg/status"), "w").close()
        at = lambda p: os.path.join(root, p)    # noqa: E731
        self.dpkg(root, "-i", self.deb)
        with open(at("etc/group")) as f:
            gid = [int(l.split(":")[2]) for l in f if l.startswith("llmux:")]
        self.assertEqual(len(gid), 1, "postinst made the llmux group")
        st = os.stat(at("etc/llmux/llmux.env"))
        self.assertEqual((st.st_mode & 0o777, st.st_uid, st.st_gid), (0o640, 0, gid[0]))
        p = subprocess.run([at("usr/bin/llmuxd"), "-t", "-c", at("etc/llmux/llmux.yaml")],
                           capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
        self.assertEqual(p.returncode, 0, p.stderr)
        # The admin's edit and the daemon's state survive remove; purge takes both.
        with open(at("etc/llmux/llmux.yaml"), "a") as f:
            f.write("# edited by the admin\n")
        os.makedirs(at("var/lib/llmux/jobs"))
        open(at("var/lib/llmux/jobs/journal"), "w").close()
        self.dpkg(root, "-r", "llmux")
        self.assertFalse(os.path.exists(at("usr/bin/llmuxd")))
        with open(at("etc/llmux/llmux.yaml")) as f:
            self.assertIn("# edited by the admin", f.read())
        self.assertTrue(os.path.exists(at("etc/llmux/llmux.env")))
        self.assertTrue(os.path.exists(at("var/lib/llmux/jobs/journal")))
        self.dpkg(root, "-P", "llmux")
        self.assertFalse(os.path.exists(at("etc/llmux")))
        self.assertFalse(os.path.exists(at("var/lib/llmux")))

    @unittest.skipUnless(shutil.which("lintian"), "lintian is not installed")
    def test_lintian_reports_no_errors(self):
        p = subprocess.run(["lintian", "--tag-display-limit", "0", self.deb],
                           capture_output=True, text=True, timeout=300)
        tags = [l for l in p.stdout.splitlines() if re.match(r"[EWI]: ", l)]
        self.assertFalse([t for t in tags if t.startswith("E: ")], p.stdout)
        # The one warning kept on purpose: the secrets file is not world-readable.
        self.assertEqual([t for t in tags if t.startswith("W: ")],
                         ["W: llmux: non-standard-file-perm 0640 != 0644 [etc/llmux/llmux.env]"])


if __name__ == "__main__":
    unittest.main()
