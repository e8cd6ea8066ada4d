"""Runs natively: python -m unittest"""

import unittest

from hookline_filter import Batch, Context, Event, Select

from filter import filter, glob_match, validate_config


class DropByChannel(unittest.TestCase):
    def test_drops_matching_channels_and_listed_users(self):
        ctx = Context("a", "w", {"channels": ["debug-*"], "user_ids": ["bot"]})
        batch = Batch(1, [Event("e", "debug-1"), Event("e", "room"), Event("e", "lobby", user_id="bot"), Event("e", "x")])
        self.assertEqual(filter(ctx, batch), Select([1, 3]))

    def test_refuses_an_unknown_field_naming_it(self):
        with self.assertRaisesRegex(ValueError, "unknown field `chanels`"):
            validate_config({"chanels": ["x"]})
        with self.assertRaisesRegex(ValueError, "drops nothing"):
            validate_config({})

    def test_globs(self):
        self.assertTrue(glob_match("debug-*", "debug-1"))
        self.assertFalse(glob_match("a*b*c", "acb"))


if __name__ == "__main__":
    unittest.main()
