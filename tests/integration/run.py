"""Runs every integration test module (tests/integration/test_*.py) and prints one summary line:
'integration: N passed, N failed'. Usage: run.py [--build DIR] [-k PATTERN] [module...]"""
import argparse
import os
import sys
import unittest

here = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("-k", dest="pattern", action="append")
    ap.add_argument("modules", nargs="*")
    a = ap.parse_args()
    os.environ["LLMUX_BUILD"] = a.build
    sys.path.insert(0, here)
    loader = unittest.TestLoader()
    if a.pattern:
        loader.testNamePatterns = ["*%s*" % p for p in a.pattern]
    if a.modules:
        suite = unittest.TestSuite(loader.loadTestsFromName(m) for m in a.modules)
    else:
        suite = loader.discover(here, pattern="test_*.py", top_level_dir=here)
    result = unittest.TextTestRunner(verbosity=1 if not os.environ.get("V") else 2).run(suite)
    failed = len(result.failures) + len(result.errors)
    passed = result.testsRun - failed - len(result.skipped)
    print("integration: %d passed, %d failed, %d skipped" % (passed, failed,
                                                             len(result.skipped)))
    sys.exit(0 if result.wasSuccessful() and result.testsRun > 0 else 1)


if __name__ == "__main__":
    main()
