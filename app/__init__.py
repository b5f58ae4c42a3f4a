"""The Panel dashboard of bnlstm: train LSTMs and BN-LSTMs live, for a lecture hall.

Installed as the package ``bnlstm_app`` (the ``app/`` folder); served with
``panel serve app/`` (``app/main.py``). Notebooks can embed it::

    from bnlstm_app.dashboard import Dashboard
    Dashboard().servable()    # or Dashboard().view() in a cell
"""
