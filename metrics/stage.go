package metrics

// stages are the cutover stages natsgate_cutover_stage reports.
var stages = []string{"legacy", "shadow", "canary", "nats"}

// SetStage marks a route's current cutover stage: 1 for it, 0 for the
// others, so a dashboard can show the stage as a state timeline.
func (m *Metrics) SetStage(route, stage string) {
	for _, s := range stages {
		v := 0.0
		if s == stage {
			v = 1
		}
		m.CutoverStage.WithLabelValues(route, s).Set(v)
	}
}
