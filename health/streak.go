package health

// Failure streaks shared between replicas: see Fact.Strike and Fact.Clear.

// importStrike counts a failure of id at another replica, at the given
// time, toward id's streak, as Failure counts one of this replica's own,
// while id is healthy: a strike older than the latest success applied does
// not count, and one that brings the streak to the rule's threshold ejects
// id. It reports whether anything changed. While id is ejected or
// half-open it changes nothing: only an ejection's own probe decides
// then.
func (s *State) importStrike(id int, at int64) bool {
	e := &s.ej[id]
	if e.rule == nil || e.ejections > 0 {
		return false
	}
	streak := e.streak
	ejected, _ := s.Failure(id, at)
	return ejected || e.streak != streak
}

// importClear applies another replica's success at the given time that
// ended its streak, as Success applies one of this replica's own, while
// id is healthy. It reports whether id's streak changed.
func (s *State) importClear(id int, at int64) bool {
	e := &s.ej[id]
	if e.rule == nil || e.ejections > 0 {
		return false
	}
	streak := e.streak
	s.Success(id, at)
	return e.streak != streak
}

// Streak returns id's failures in a row, its own and those imported
// (0 when ejected: an ejection starts the count again).
func (s *State) Streak(id int) int {
	if uint(id) >= uint(len(s.ej)) {
		return 0
	}
	return int(s.ej[id].streak)
}

// applyStreakFact finishes, on the actor's goroutine, a strike or clear
// that changed the State: an ejection the strike completed is this
// replica's own (exported, logged and told to hooks like one of its own
// failures); otherwise only the snapshot's suspect bit may change.
func (a *Actor) applyStreakFact(id int, f Fact, prev int64, track bool) bool {
	e := &a.state.ej[id]
	if f.Strike && e.ejections > 0 {
		a.probes[id].Store(e.until)
		a.markSuspect(id)
		if track {
			a.changes = append(a.changes, change{id: id, kind: Ejected, prev: prev, until: e.until, n: int(e.ejections)})
		}
		return true
	}
	return a.streakChanged(id)
}

// streakChanged updates id's attention bit after a strike or clear and
// reports whether the snapshot must change: a streak that began or ended.
func (a *Actor) streakChanged(id int) bool {
	was := a.suspect[id]
	a.markSuspect(id)
	return a.suspect[id] != was
}
