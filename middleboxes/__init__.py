"""Inline packet processors that imitate real middleboxes (see middleboxes/base.py)."""
