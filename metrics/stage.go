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

// SetRoutes sets natsgate_routes to the number of served routes at each
// stage; every stage is exported, 0 when no route is at it, so a sum or a
// ratio over stages never misses a series.
func (m *Metrics) SetRoutes(byStage map[string]int) {
	for _, s := range stages {
		m.Routes.WithLabelValues(s).Set(float64(byStage[s]))
	}
}
