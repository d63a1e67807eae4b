"""Report tables in HTML: columns of words read left-aligned, columns of numbers right-aligned."""
from lmforge.report.tables import Table, text_columns, to_html
from lmforge.report.units import Bytes, Count, Share


def test_word_columns_are_left_aligned_and_number_columns_right_aligned():
    t = Table("prompt clusters", ["cluster", "before", "kept %", "bytes", "top terms", "most central prompt", "ratio"],
              [[0, Count(74), Share(0.5), Bytes(233_084), "write can a you in", "Can you write a lambda?", "1.05x"],
               [1, Count(1_105), Share(1.0), Bytes(12_100), "是 的 你 不 么", "谁是你的父亲", "-"],
               [2, Count(3), Share(0.216), Bytes(5_400_000_000), "-", "What is the smallest ocean?", "0.97x"]])
    assert text_columns(t) == [True, False, False, False, True, True, False]
    html = to_html(t)
    assert '<td class="t">Can you write a lambda?</td>' in html
    assert '<th class="t">top terms</th>' in html and "<th>before</th>" in html


def test_a_column_of_mostly_numbers_with_a_word_stays_numeric():
    t = Table("losses", ["step", "loss"], [[1, 2.5], [2, "1.2e-05"], [3, "n/a"], [4, 0.25]])
    assert text_columns(t) == [True, False]
