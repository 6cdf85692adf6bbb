"""Evaluating intervention models: metrics, estimators, plots and the report.

How well a model predicts when the person intervenes, per control tick, pooled over episodes
(`mile-ros eval-interventions`, mile_ros.tools.eval_interventions, is the command over these):

- `metrics`: the scores of predicted p(nu=1|s) against the actual nu (accuracy, balanced accuracy,
  ROC-AUC, average precision, log-likelihood, Brier, expected calibration error, reliability
  bins), MILE's error against a known true p, and the percentile bootstrap over episodes. numpy
  only.
- `onsets`: p scored as the hazard of a takeover: the onsets, handbacks and risk set (the
  robot-controlled ticks) of each episode, onset AUC, log-likelihood and calibration,
  time-to-onset error, and the observed takeovers' lengths (handback timing). numpy only.
- `estimators`: what predicts p(nu=1|s): the MILE checkpoint's intervention model, the majority
  class, a neural classifier fitted on earlier iterations; and their inputs (episode bags, the
  checkpoint, a simulated person's true p).
- `plots`: the matplotlib figures (ROC and precision-recall, calibration, timelines, MILE vs the
  truth).
- `report`: the estimators evaluated with episode-bootstrap intervals, report.json with the plots,
  and the printed table.

Imports go one way: onsets, estimators and plots use metrics, plots uses onsets, report uses
them all; EvalError, the error for unusable input, is defined here.
"""


class EvalError(ValueError):
    """Unusable input to the evaluation; the message names the argument or file."""
