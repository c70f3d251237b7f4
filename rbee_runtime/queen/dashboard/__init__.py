"""The queen's live dashboard at ``/ui`` (plain HTML/CSS/JS in ``static/``, routes in :mod:`.routes`) and its JSON
at ``/ui/api/state`` (:mod:`.schema`, also read by ``rbee top``)."""
