"""Figures and the HTML page of a replay analysis."""
