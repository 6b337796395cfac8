"""``rf``: the study's baseline, a Random Forest on the raw openSMILE features.

Section 3 of the study: a Random Forest with 1000 trees and maximal depth 10
on the 1582 emobase2010 features. It is the classifier of every scenario of
Table 2 (scenario 1: source rows only; scenario 2: the target's training
speaker only; scenario 3: both, pooled with the same labels) and the
reference the transfer methods of Table 3 are compared with. The rows are
used as given: the corpus a row comes from (``is_target``) and its speaker
do not matter to this method.
"""

from __future__ import annotations

from crossemo.methods._forest import ForestMethod


class RandomForest(ForestMethod):
    """The study's Random Forest (1000 trees, depth 10, single-threaded) on the pooled training rows.

    Parameters: those of :class:`~crossemo.methods._forest.ForestMethod`
    (``n_estimators``, ``max_depth``, ``max_features``, ``random_state``).

    Attributes:
        forest_: the fitted ``RandomForestClassifier``.
        classes_: the labels seen in training, the study's emotions first in their order.
        n_features_in_: number of input features.
    """
