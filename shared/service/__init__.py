"""The use cases: the rotation engine and its pure decisions, the event rules, the views and the sweep."""
