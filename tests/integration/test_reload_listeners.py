"""SIGHUP with a changed listen: new addresses start accepting, removed ones stop, and a
connection accepted on a removed address keeps being served."""
import signal
import socket
import threading
import time

from harness import Case, DEFAULT_CONFIG, chat_body, free_port


def accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False


class ReloadListenersTest(Case):
    def rewrite(self, listen):
        text = open(self.d.conf).read()
        first = text.splitlines()[1]
        assert first.startswith("listen:"), first
        self.d.write_config(text.replace(first, "listen: [%s]" % listen, 1))

    def wait_until(self, pred, timeout=3.0):
        end = time.monotonic() + timeout
        while not pred() and time.monotonic() < end:
            time.sleep(0.02)
        return pred()

    def test_listeners_follow_the_file(self):
        old, new = self.d.port, free_port()
        keep = self.d.conn()
        keep.request("GET", "/healthz")
        self.assertEqual(keep.getresponse().read(), b'{"status":"ok"}')
        result = []
        slow = threading.Thread(target=lambda: result.append(
            self.d.chat("slow @mock:delay=600")[0]))
        slow.start()
        time.sleep(0.1)
        self.rewrite('"127.0.0.1:%d"' % new)
        self.d.signal(signal.SIGHUP)
        self.assertTrue(self.wait_until(lambda: accepts(new)), "new address never accepted")
        self.assertTrue(self.wait_until(lambda: not accepts(old)), "old address still accepts")
        slow.join(5)
        self.assertEqual(result, [200])        # in flight on the old listener: finished
        keep.request("GET", "/healthz")        # kept-alive connection from the old listener
        self.assertEqual(keep.getresponse().status, 200)
        keep.close()
        # and back, with both
        self.rewrite('"127.0.0.1:%d", "127.0.0.1:%d"' % (new, old))
        self.d.signal(signal.SIGHUP)
        self.assertTrue(self.wait_until(lambda: accepts(old)))
        self.assertTrue(accepts(new))
        self.d.port = old
