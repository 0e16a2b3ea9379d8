import sys
import unittest


class TestThings(unittest.TestCase):
    def test_pass(self):
        self.assertEqual(1 + 1, 2)

    def test_fail(self):
        self.assertEqual([1, 2, 3], [1, 2, 4])

    def test_error(self):
        {}["missing"]

    @unittest.skip("not now")
    def test_skip(self):
        pass

    def test_subtests(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertLess(i, 2)


class TestMore(unittest.TestCase):
    def test_main_module(self):
        self.assertEqual(type(self).__module__, "__main__")
        self.assertIs(sys.modules["__main__"].TestMore, TestMore)


if __name__ == "__main__":
    unittest.main(verbosity=2)
