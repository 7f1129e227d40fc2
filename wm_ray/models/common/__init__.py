"""Model math shared by the world-model families (DreamerV3-class agents first).

- ``transforms``: symlog / symexp and two-hot regression over exponentially spaced bins.
- ``distributions``: unimix one-hot categoricals, categorical latents, the bounded-normal
  action distribution and a stable Bernoulli.
- ``returns``: lambda-returns and the percentile return normalizer.
- ``onehot``: Linear layers over features with a one-hot tail (the categorical latent).
- ``nets``: MLP, conv encoder / decoder, init helpers.
- ``optim``: Adam with gradient clipping, AGC, warmup and metrics.

Pure torch: nothing here imports Ray.
"""

from __future__ import annotations

from wm_ray.models.common.distributions import (
    BernoulliSafe,
    BoundedNormal,
    CategoricalLatent,
    OneHotCategorical,
    categorical_kl,
)
from wm_ray.models.common.nets import (
    MLP,
    ChannelNorm,
    ConvDecoder,
    ConvEncoder,
    bottle,
    count_params,
    init_fan_avg_,
    init_zero_,
    postprocess_image,
    preprocess_image,
    use_channels_last,
)
from wm_ray.models.common.onehot import Features, OneHotInput, onehot_matmul
from wm_ray.models.common.optim import Optimizer
from wm_ray.models.common.returns import ReturnNormalizer, lambda_returns
from wm_ray.models.common.transforms import (
    TwoHot,
    TwoHotDist,
    symexp,
    symlog,
    twohot_bins,
    twohot_decode,
    twohot_encode,
)

__all__ = [
    "MLP",
    "BernoulliSafe",
    "BoundedNormal",
    "CategoricalLatent",
    "ChannelNorm",
    "ConvDecoder",
    "ConvEncoder",
    "Features",
    "OneHotCategorical",
    "OneHotInput",
    "Optimizer",
    "ReturnNormalizer",
    "TwoHot",
    "TwoHotDist",
    "bottle",
    "categorical_kl",
    "count_params",
    "init_fan_avg_",
    "init_zero_",
    "lambda_returns",
    "onehot_matmul",
    "postprocess_image",
    "preprocess_image",
    "symexp",
    "symlog",
    "twohot_bins",
    "twohot_decode",
    "twohot_encode",
    "use_channels_last",
]
