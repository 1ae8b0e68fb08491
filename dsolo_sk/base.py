"""Base classes shared by the package's estimators."""

__all__ = ["FitFreeMixin"]


def validate_own_params(est):
    """Call `est`'s own ``_validate_params()``, if it defines one.

    Parts (extractors, normalisers, discrepancies, upsamplers) may define
    a ``_validate_params()`` that checks their parameters without loading
    a model, so that a bad value fails before any work. Every
    :class:`~sklearn.base.BaseEstimator` also inherits scikit-learn's
    private ``_validate_params``, which needs ``_parameter_constraints``:
    that one is not called.
    """
    from sklearn.base import BaseEstimator

    validate = getattr(type(est), "_validate_params", None)
    if callable(validate) and validate is not getattr(
            BaseEstimator, "_validate_params", None):
        est._validate_params()
    return est


class FitFreeMixin:
    """Mixin for estimators that learn nothing from data.

    The segmenters and the feature transformers are fit-free: ``fit`` only
    validates. This mixin tells scikit-learn so: the estimator counts as
    fitted without ``fit`` (so a Pipeline ending in it can predict), needs
    no target, and takes lists of images or feature sets rather than a
    2-D array. Place it before :class:`~sklearn.base.BaseEstimator` in the
    bases.

    Examples
    --------
    >>> from sklearn.base import BaseEstimator
    >>> from sklearn.utils.validation import check_is_fitted
    >>> from dsolo_sk.base import FitFreeMixin
    >>> class Identity(FitFreeMixin, BaseEstimator):
    ...     def fit(self, X=None, y=None):
    ...         return self
    ...     def predict(self, X):
    ...         return X
    >>> check_is_fitted(Identity())  # no NotFittedError
    >>> Identity().__sklearn_tags__().requires_fit
    False
    """

    def __sklearn_is_fitted__(self):
        return True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = False
        tags.target_tags.required = False
        tags.non_deterministic = False
        return tags
